"""Softmax exponentials shared by the attention kernels: ``exp2`` on the FMA pipes.

On Hopper the special-function unit does ~16 ``ex2`` per clock per SM against ~4096 matmul
FLOP, so at head dim 64 the softmax's exponentials, not the tensor cores, bound the forward
pass. ``_exp2_tile`` computes a fixed share of a score tile's exponentials with a cubic on the
FMA/ALU pipes instead (FlashAttention-4's trick); the kernels expose the share as a knob.
"""

import triton
import triton.language as tl

# 2^f on [-0.5, 0.5] as 1 + f*(C1 + f*(C2 + f*C3)): a relative-error fit (max 1.02e-4, below
# half an fp16 ulp, 4.9e-4, and a tenth of a bf16 one), refitted here rather than taken from FA4.
EXP2_C1 = tl.constexpr(0.69328293)
EXP2_C2 = tl.constexpr(0.24221097)
EXP2_C3 = tl.constexpr(0.05500893)
# 1.5 * 2^23: adding it rounds a float in (-2^22, 2^22) to an integer held in the low mantissa bits.
ROUND_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def _exp2_fma(x):
    """2^x for x <= 0 on the FMA/ALU pipes only (FlashAttention-4's trick), no MUFU ``ex2``.

    x = j + f with j = round(x) (the magic-number add, an FADD rather than a MUFU-rate F2I)
    and f in [-0.5, 0.5]; 2^f by a cubic; j is added to the exponent field as an integer.
    x is clamped at -127, where j = -127, f = 0 and the cubic's exact 1.0 give the bit pattern
    0: masked scores (-inf) come out exactly 0, as ``exp2`` gives.
    """
    x = tl.maximum(x, -127.0)
    shifted = x + ROUND_MAGIC
    j = shifted - ROUND_MAGIC
    f = x - j
    poly = 1.0 + f * (EXP2_C1 + f * (EXP2_C2 + f * EXP2_C3))
    j_int = shifted.to(tl.int32, bitcast=True) - 0x4B400000  # round(x) as an integer
    return (poly.to(tl.int32, bitcast=True) + (j_int << 23)).to(tl.float32, bitcast=True)


@triton.jit
def _halves(x, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Columns [0, COLS/2) and [COLS/2, COLS) of a [ROWS, COLS] tile (register moves only)."""
    return x.reshape([ROWS, 2, COLS // 2]).permute(0, 2, 1).split()


@triton.jit
def _unhalves(a, b, ROWS: tl.constexpr, COLS: tl.constexpr):
    return tl.join(a, b).permute(0, 2, 1).reshape([ROWS, COLS])


@triton.jit
def _exp2_tile(x, ROWS: tl.constexpr, COLS: tl.constexpr, EXP2_POLY: tl.constexpr):
    """exp2 of a score tile with ``EXP2_POLY`` percent (0, 25, 50, 100) of its columns done by
    ``_exp2_fma``: the special-function unit (16 ex2 per clock per SM on Hopper) and the FMA
    pipes share the softmax's exponentials instead of the SFU doing all of them."""
    if EXP2_POLY == 100:
        p = _exp2_fma(x)
    elif EXP2_POLY == 50:
        a, b = _halves(x, ROWS, COLS)
        p = _unhalves(tl.math.exp2(a), _exp2_fma(b), ROWS, COLS)
    elif EXP2_POLY == 25:
        a, b = _halves(x, ROWS, COLS)
        b0, b1 = _halves(b, ROWS, COLS // 2)
        p = _unhalves(tl.math.exp2(a), _unhalves(tl.math.exp2(b0), _exp2_fma(b1), ROWS, COLS // 2), ROWS, COLS)
    else:
        p = tl.math.exp2(x)
    return p
