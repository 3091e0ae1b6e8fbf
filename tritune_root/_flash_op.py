"""``tritune.flash_attention``: the tuned FlashAttention forward as a drop-in op.

The public function checks its arguments (errors name the argument and the fix), builds the
problem spec from the shapes, asks the runtime for the tuned config of this device, and calls
the ``tritune::flash_attention`` torch operator, whose fake implementation lets torch.compile
trace through it.
"""

from __future__ import annotations

import math

import torch
from tritune import runtime
from tritune._paged_op import refuse_grad
from tritune.kernels import flash_attention as _fa
from tritune.search_space import FlashAttentionSpec, interpreting

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
MAX_HEAD_DIM = FlashAttentionSpec.MAX_HEAD_DIM


def _lse_shape(q: torch.Tensor, return_lse: bool) -> tuple[int, ...]:
    return tuple(q.shape[:3]) if return_lse else (0,)


# The schema is spelled out rather than inferred, so older torch releases (the GPU image has
# 2.11) read the same signature.
SCHEMA = ("(Tensor q, Tensor k, Tensor v, Tensor? kv_window, bool causal, float scale, bool return_lse,"
          " Tensor? bias=None) -> (Tensor, Tensor)")


def _flash_attention_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_window: torch.Tensor | None,
                          causal: bool, scale: float, return_lse: bool,
                          bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    batch, heads_q, seq_q, head_dim = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(_lse_shape(q, return_lse), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse.fill_(float("-inf"))
    sizes = (batch, heads_q, k.shape[1], seq_q, k.shape[2], head_dim, _DTYPES[q.dtype], causal)
    config = runtime.dispatcher(q.device).lookup_by(sizes, lambda: FlashAttentionSpec(*sizes)).config
    inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": scale, "kv_window": kv_window, "bias": bias}
    _fa.launch(inputs, config, out=out,
               lse=lse if return_lse else None)
    return out, lse


_flash_attention_op = torch.library.custom_op("tritune::flash_attention", _flash_attention_impl,
                                             mutates_args=(), schema=SCHEMA)


def _plain_eager(*tensors: torch.Tensor) -> bool:
    """Plain tensors in eager mode: the op's dispatcher would only forward to the launch.

    Under torch.compile, jit tracing, a dispatch mode (FakeTensorMode, ...) or for tensor
    subclasses the call goes through the registered operator instead.
    """
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and all(type(t) is torch.Tensor for t in tensors)
            and _current_dispatch_mode() is None)


def _current_dispatch_mode():
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode()


@_flash_attention_op.register_fake
def _flash_attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_window: torch.Tensor | None,
                          causal: bool, scale: float, return_lse: bool,
                          bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    out = q.new_empty(q.shape)
    lse = q.new_empty(_lse_shape(q, return_lse), dtype=torch.float32)
    return out, lse


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, return_lse: bool = False,
                    kv_window: torch.Tensor | None = None, bias: torch.Tensor | None = None
                    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with the tuned Triton FlashAttention kernel.

    q ``[B, Hq, Sq, D]``, k/v ``[B, Hkv, Skv, D]`` with ``Hq % Hkv == 0`` (GQA/MQA without
    repeating K/V), any strides, fp16/bf16 (fp32 accepted), D up to 256. ``causal`` aligns the
    mask bottom-right when Sq != Skv: query i sees keys j <= i + Skv - Sq (a query that sees no
    key gets 0). ``scale`` defaults to 1/sqrt(D). Returns ``[B, Hq, Sq, Dv]`` in q's dtype, and
    with ``return_lse`` also the log-sum-exp of the scaled scores ``[B, Hq, Sq]`` (fp32).

    v may have its own head dim ``Dv`` (multi-head latent attention, DeepSeek V2/V3: q/k 192,
    v 128): the narrower side is zero-padded to the wider one for the launch (zero columns add
    nothing to q.k, zero value columns are sliced off), at the cost of one copy of it.

    ``kv_window`` (padded batches, KV caches with empty slots): int32 ``[B, 3]`` rows
    ``(lo, hi, shift)``; batch b sees only keys ``lo <= j < hi`` and, when causal, query i sees
    keys ``j <= i + shift`` (the default is ``(0, Skv, Skv - Sq)``).

    ``bias``: an additive score bias (T5's relative position bias; -inf hides a key), fp32,
    fp16 or bf16, 4-D and broadcastable to ``[B, Hq, Sq, Skv]`` (size 1 where shared), added to
    the scaled scores before the softmax; any strides (a broadcast view costs no copy).
    """
    check_inputs(q, k, v)
    refuse_grad("tritune.flash_attention", q=q, k=k, v=v, bias=bias)
    if kv_window is not None:
        kv_window = _check_window(kv_window, q)
    if bias is not None:
        _check_bias(bias, q, k)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale={scale!r} must be a finite positive number (or None for 1/sqrt(head_dim))")
    value_dim = v.shape[3]
    q, k, v = pad_head_dims(q, k, v)
    args = (q, k, v, kv_window, bool(causal), float(scale), bool(return_lse), bias)
    if _plain_eager(q, k, v):
        out, lse = _flash_attention_impl(*args)  # skips ~18 us of dispatcher for the same result
    else:
        out, lse = torch.ops.tritune.flash_attention(*args)
    if out.shape[3] != value_dim:
        out = out[..., :value_dim].contiguous()
    return (out, lse) if return_lse else out


def pad_head_dims(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v with one head dim: the narrower of q/k and v zero-padded (last axis) to the wider.

    Exact: zero q/k columns add nothing to the scores, zero v columns give output columns the
    caller slices off. The scale must be taken from q's own head dim before this.
    """
    qk_dim, value_dim = q.shape[-1], v.shape[-1]
    if qk_dim == value_dim:
        return q, k, v
    pad = torch.nn.functional.pad
    if value_dim < qk_dim:
        return q, k, pad(v, (0, qk_dim - value_dim))
    return pad(q, (0, value_dim - qk_dim)), pad(k, (0, value_dim - qk_dim)), v


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ValueError naming the offending argument when q, k, v are not a valid call."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            layout = "[batch, heads_q, seq_q, head_dim]" if name == "q" else "[batch, heads_kv, seq_kv, head_dim]"
            raise ValueError(f"{name} must be 4-D {layout}; got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}.dtype={t.dtype} is not supported; use float16, bfloat16 or float32")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; move all inputs to one device")
        if t.dtype != q.dtype:
            raise ValueError(f"{name}.dtype={t.dtype} differs from q.dtype={q.dtype}; cast the inputs to one dtype")
    if q.device.type != "cuda" and not interpreting():
        raise ValueError(f"q is on {q.device}; tritune.flash_attention runs on CUDA GPUs "
                         "(or on CPU with TRITON_INTERPRET=1 set before tritune is imported)")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v.shape={tuple(v.shape)} must equal k.shape={tuple(k.shape)} in its first three "
                         "dims [batch, heads_kv, seq_kv] (only the head dim may differ)")
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"k.shape[0]={k.shape[0]} (batch) must equal q.shape[0]={q.shape[0]}")
    head_dim = q.shape[3]
    if k.shape[3] != head_dim:
        raise ValueError(f"k.shape[3]={k.shape[3]} (head_dim) must equal q.shape[3]={head_dim}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim={head_dim} (q.shape[3]) is not supported; supported: 1..{MAX_HEAD_DIM}")
    if not 1 <= v.shape[3] <= MAX_HEAD_DIM:
        raise ValueError(f"v.shape[3]={v.shape[3]} (value head_dim) is not supported; supported: 1..{MAX_HEAD_DIM}")
    heads_q, heads_kv = q.shape[1], k.shape[1]
    if heads_kv == 0 or heads_q % heads_kv:
        raise ValueError(f"q.shape[1]={heads_q} (heads_q) must be a multiple of k.shape[1]={heads_kv} (heads_kv)")
    if k.shape[2] == 0 and q.shape[2] > 0 and q.shape[0] > 0 and heads_q > 0:
        raise ValueError("k has no keys (k.shape[2] == 0): attention over an empty sequence is undefined")


def _check_bias(bias: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
    full = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if not isinstance(bias, torch.Tensor):
        raise ValueError(f"bias must be a torch.Tensor, got {type(bias).__name__}")
    if bias.dim() != 4 or any(b not in (1, n) for b, n in zip(bias.shape, full, strict=True)):
        raise ValueError(f"bias.shape={tuple(bias.shape)} must be 4-D and broadcastable to [batch, heads_q, seq_q, "
                         f"seq_kv] = {list(full)} (each dim that size or 1)")
    if bias.dtype not in _DTYPES:
        raise ValueError(f"bias.dtype={bias.dtype} is not supported; use float32, float16 or bfloat16")
    if bias.device != q.device:
        raise ValueError(f"bias is on {bias.device} but q is on {q.device}")


def _check_window(kv_window: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    if not isinstance(kv_window, torch.Tensor) or kv_window.shape != (q.shape[0], 3):
        shape = tuple(kv_window.shape) if isinstance(kv_window, torch.Tensor) else type(kv_window).__name__
        raise ValueError(f"kv_window must be an int32 tensor of shape [batch, 3] = [{q.shape[0]}, 3]; got {shape}")
    if kv_window.dtype != torch.int32 or kv_window.is_floating_point():
        raise ValueError(f"kv_window.dtype={kv_window.dtype} must be torch.int32")
    if kv_window.device != q.device:
        raise ValueError(f"kv_window is on {kv_window.device} but q is on {q.device}")
    return kv_window.contiguous()
