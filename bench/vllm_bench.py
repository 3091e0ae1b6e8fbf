"""One attention layer's serving step as the TRITUNE vLLM backend runs it, against vLLM's TRITON_ATTN.

    python -m tritune.bench.vllm_bench --vllm-path .vllm-triton [--json out.json] [--markdown out.md]
    python -m tritune.bench.vllm_bench --dry      # tiny CPU run under the interpreter (times mean nothing)

A layer's step is two launches in both backends: the new K/V into vLLM's per-layer cache
(``[num_blocks, Hkv, block_size, 2*D]``, K and V strided views) through ``slot_mapping``, then
attention over the ragged batch. ``tritune``: ``write_kv_cache`` + ``tritune.varlen_attention``,
exactly what ``TrituneAttentionImpl.do_kv_cache_update`` and ``.forward`` call (the classes
themselves need the vllm package, which the GPU machine does not have). ``vllm``: vLLM 0.33's
``triton_reshape_and_cache_flash`` + ``unified_attention`` as its TRITON_ATTN backend calls them
(split-KV scratch for ``128 // Hkv`` sequences, 16 segments), taken from ``--vllm-path`` (the
folder scripts/vllm_triton_extract.sh fills from the vllm wheel) or the installed vllm; from the
folder only ``unified_attention`` imports (the cache write reaches vllm.distributed), so the
TRITON_ATTN step column is empty there and the attention columns compare. Batches are
varlen_bench's. Both outputs are checked against each other and against sampled float64 rows
before anything is timed; times are do_bench medians (the step: both launches together).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Any

from tritune.bench._common import add_run_arguments, bench_main, environment, fmt, ratio, time_ms

VLLM_OPS = "vllm.v1.attention.ops"


def load_vllm_ops(path: str | None) -> tuple[Any, Any, str]:
    """(unified_attention, triton_reshape_and_cache_flash, where) from a ``vllm/`` tree under
    ``path`` or the installed vllm; (None, None, why) when they cannot be imported.

    From a bare tree (no installed vllm) vLLM cannot resolve its CUDA platform (that module loads
    vllm's compiled extensions), so the platform is pinned to vLLM's generic one first: the two
    kernels read from it only the FP8 dtype (e4m3fn) and whether the device is a Blackwell
    (``is_device_capability_family(100)``, False there: the GPU suite runs on Hopper).
    """
    installed = importlib.util.find_spec("vllm") is not None and not path
    if path:
        sys.path.insert(0, os.path.abspath(path))
    try:
        if not installed:
            import vllm.platforms as platforms
            from vllm.platforms.interface import UnspecifiedPlatform

            platforms._current_platform = UnspecifiedPlatform()
        unified = importlib.import_module(f"{VLLM_OPS}.triton_unified_attention").unified_attention
    except Exception as exc:  # a partial vllm raises more than ImportError
        where = f" from {path}" if path else " (give --vllm-path DIR: scripts/vllm_triton_extract.sh makes it)"
        return None, None, f"vLLM's Triton unified_attention is not importable{where}: {type(exc).__name__}: {exc}"
    where = getattr(sys.modules[f"{VLLM_OPS}.triton_unified_attention"], "__file__", "?")
    try:  # reaches vllm.distributed (psutil, ...): present with an installed vllm, not in the tree
        cache = importlib.import_module(f"{VLLM_OPS}.triton_reshape_and_cache_flash").triton_reshape_and_cache_flash
    except Exception as exc:
        return unified, None, f"{where} (its cache write is not importable: {type(exc).__name__}: {exc})"
    return unified, cache, where


def step_inputs(x: dict[str, Any], seed: int) -> dict[str, Any]:
    """This step's new K/V rows and their ``slot_mapping`` (the last ``q_len`` positions of each
    sequence), for a varlen_bench batch made with ``vllm_layout=True``."""
    import torch

    q, k = x["q"], x["k"]
    block_size, heads_kv, head_dim = k.shape[1], k.shape[2], k.shape[3]
    table = x["block_table"].cpu()
    slots = []
    for s, (q_len, k_len) in enumerate(zip(x["q_lens"], x["k_lens"], strict=True)):
        for pos in range(k_len - q_len, k_len):
            slots.append(int(table[s, pos // block_size]) * block_size + pos % block_size)
    gen = torch.Generator(device=q.device).manual_seed(seed)
    shape = (q.shape[0], heads_kv, head_dim)
    return {"key": torch.empty(shape, dtype=q.dtype, device=q.device).normal_(generator=gen),
            "value": torch.empty(shape, dtype=q.dtype, device=q.device).normal_(generator=gen),
            "slot_mapping": torch.tensor(slots, dtype=torch.int64, device=q.device)}


def tritune_step(x: dict[str, Any], new: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(step, attention only, output) of the TRITUNE backend's two launches."""
    import torch
    import tritune
    from tritune.integrations.vllm._kv_write import write_kv_cache

    out = torch.empty_like(x["q"])

    def attention() -> None:
        tritune.varlen_attention(x["q"], x["k"], x["v"], x["cu_seqlens_q"], x["max_seqlen_q"], x["max_seqlen_k"],
                                 seqused_k=x["seqused_k"], block_table=x["block_table"], causal=True,
                                 scale=x["scale"], out=out)

    def step() -> None:
        write_kv_cache(new["key"], new["value"], x["k"], x["v"], new["slot_mapping"])
        attention()

    return step, attention, out


def vllm_step(x: dict[str, Any], new: dict[str, Any], unified: Any, cache_write: Any) -> tuple[Any, Any, Any]:
    """(step or None without ``cache_write``, attention only, output) of vLLM's TRITON_ATTN:
    reshape-and-cache, then unified_attention."""
    import torch
    from tritune.bench._varlen_backends import vllm_backend

    attention, output = vllm_backend(x, unified)
    one = torch.ones((), dtype=torch.float32, device=x["q"].device)

    def step() -> None:
        cache_write(new["key"], new["value"], x["k"], x["v"], new["slot_mapping"], "auto", one, one)
        attention()

    return (step if cache_write is not None else None), attention, output()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tritune.bench._varlen_backends import check, make_serving_batch
    from tritune.bench.varlen_bench import DRY_BATCHES, DRY_SHAPE, FULL_BATCHES, FULL_SHAPE

    device = torch.device("cpu" if args.dry else "cuda")
    batches, shape = (DRY_BATCHES, DRY_SHAPE) if args.dry else (FULL_BATCHES, FULL_SHAPE)
    dtype = torch.float16 if args.dry else torch.bfloat16  # bf16 dots are wrong under the interpreter
    unified, cache_write, where = load_vllm_ops(args.vllm_path or os.environ.get("TRITUNE_VLLM_PATH"))
    if args.dry:  # vLLM's cache write asks torch.cuda for the capability: GPU only
        cache_write = None
    rows = []
    for i, batch in enumerate(batches):
        x = make_serving_batch(batch, heads_q=shape["heads"][0], heads_kv=shape["heads"][1],
                               head_dim=shape["head_dim"], block_size=shape["block_size"], dtype=dtype, device=device,
                               seed=i, vllm_layout=True)
        new = step_inputs(x, seed=100 + i)
        ours, our_attention, our_out = tritune_step(x, new)
        ours()  # writes this step's K/V; the check sees the same cache as the timed runs
        seqs = list(range(len(batch.q_lens)))
        ok, detail = check(x, our_out, seqs)
        row: dict[str, Any] = {"batch": batch.name, "description": batch.description, "tokens": sum(batch.q_lens),
                               "tritune_ok": ok, "tritune_check": detail}
        timed = {"tritune_ms": ours, "tritune_attention_ms": our_attention}
        if unified is not None:
            theirs, their_attention, their_out = vllm_step(x, new, unified, cache_write)
            their_attention()
            v_ok, v_detail = check(x, their_out, seqs)
            row.update(vllm_ok=v_ok, vllm_check=v_detail,
                       max_diff=float((our_out.float() - their_out.float()).abs().max()))
            if v_ok:
                timed.update(vllm_ms=theirs, vllm_attention_ms=their_attention)
        for name, fn in timed.items():
            row[name] = time_ms(fn, args.dry, args.warmup, args.rep) if ok and fn is not None else None
        rows.append(row)
    return {"environment": environment(args.dry), "vllm": where, "dtype": str(dtype), "shape": shape, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"vLLM ops: {result['vllm']}", "",
             "| batch | tokens | TRITUNE step (us) | TRITON_ATTN step (us) | step speedup | TRITUNE attention (us) "
             "| unified_attention (us) | attention speedup | max diff | checks |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def us(ms: float | None) -> str:
        return fmt(ms * 1e3) if ms is not None else "-"

    for r in result["rows"]:
        ours, theirs = r.get("tritune_ms"), r.get("vllm_ms")
        our_att, their_att = r.get("tritune_attention_ms"), r.get("vllm_attention_ms")
        lines.append(f"| {r['batch']} | {r['tokens']} | {us(ours)} | {us(theirs)} | {ratio(theirs, ours)} "
                     f"| {us(our_att)} | {us(their_att)} | {ratio(their_att, our_att)} | {fmt(r.get('max_diff'))} "
                     f"| {r['tritune_check']}; {r.get('vllm_check', 'vllm not run')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tritune.bench.vllm_bench", description=__doc__.splitlines()[0])
    p.add_argument("--vllm-path", default=None, metavar="DIR",
                   help="folder with a vllm/ tree of vLLM's module files (scripts/vllm_triton_extract.sh); "
                        "default $TRITUNE_VLLM_PATH, else the installed vllm")
    p.add_argument("--dry", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    add_run_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
