"""The GPU suite: one command that turns a short GPU loan into committed evidence.

    python -m tritune.bench.gpu_suite --out DIR --budget-s 540          # on a GPU
    python -m tritune.bench.gpu_suite --out DIR --dry                   # CPU, interpreter, seconds

Parts, in priority order (``--parts`` picks some):

  env          card, driver, torch/triton versions
  ceilings     bf16 matmul TFLOP/s and device-to-device copy GB/s, measured in this run
  correctness  every kernel against its reference on the GPU, over a compact grid of shapes; the
               serving kernel on odd mixed batches (decode + spec + chunks, FP8, strided caches)
  bench        each kernel against its baselines (SDPA flash/cuDNN/efficient; page gather + SDPA;
               serving batches: vLLM's Triton unified_attention, our paged and flash kernels)
  landscapes   configs of each kernel on a grid of shapes in a fixed random order (any prefix is a
               uniform sample), one compile per config and shape group; compile time per config
  tuning       default vs random search replayed on the recorded landscapes; live tunes of one flash
               and one decode shape (default, tpe, exhaustive; 60 s each, cold compile cache) timed
               to 98% of the recorded optimum
  clients      tiny transformers models (encoder, sliding window, two-sided window, encoder-decoder,
               latent attention, MQA, CLIP) with attn_implementation="tritune" against eager on
               the GPU, kernel launches counted

Each part writes ``DIR/<part>.json`` and ``DIR/<part>.md`` as soon as it finishes, so a run cut
short keeps what it did; rerunning with the same ``--out`` skips finished parts and measured
landscape configs, and ``--continue-from data/gpu_runs/*`` extends earlier runs' landscapes on the
same card instead of measuring them again. ``--pack FILE.tar.gz`` bundles DIR into one file,
which is what comes back from the project's GPU machine (it returns at most a few files). ``--promote`` turns the recorded
landscapes' best configs into the package's built-in tuned table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

PARTS = ("env", "ceilings", "correctness", "bench", "landscapes", "tuning", "clients")


@dataclass
class SuiteContext:
    """What every part gets: where to write, how long it may take, and whether this is a dry run."""

    out: Path
    dry: bool
    deadline: float
    device: str
    card: str
    date: str
    log: Callable[[str], None] = print
    results: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self, reserve_s: float = 0.0) -> bool:
        return self.remaining() <= reserve_s


def _part_modules() -> dict[str, Callable[[SuiteContext], dict[str, Any]]]:
    from . import _suite_clients
    from . import _suite_parts as p

    return {"env": p.env, "ceilings": p.ceilings, "correctness": p.correctness, "bench": p.bench,
            "landscapes": p.landscapes, "tuning": p.tuning, "clients": _suite_clients.clients}


def run_suite(out: Path, *, budget_s: float, dry: bool, parts: tuple[str, ...] = PARTS,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``parts`` within ``budget_s``; returns {part: result or {"error": ...}}."""
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    import torch

    device = "cuda" if torch.cuda.is_available() and not dry else "cpu"
    if device == "cpu" and not dry:
        raise SystemExit("gpu_suite: no CUDA device found; use --dry for the CPU rehearsal")
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu-interpreter"
    out.mkdir(parents=True, exist_ok=True)
    ctx = SuiteContext(out=out, dry=dry, deadline=time.monotonic() + budget_s, device=device, card=card,
                       date=date.today().isoformat(), log=log)
    funcs = _part_modules()
    summary: dict[str, Any] = {}
    for name in parts:
        done = out / f"{name}.json"
        if done.exists():
            prior = json.loads(done.read_text())
            if prior.get("complete"):
                log(f"[{name}] already done in {done}; skipping")
                summary[name] = prior
                ctx.results[name] = prior
                continue
        if ctx.expired(reserve_s=5):
            log(f"[{name}] skipped: the time budget is spent (rerun with the same --out to continue)")
            summary[name] = {"complete": False, "skipped": "budget"}
            continue
        log(f"[{name}] starting ({ctx.remaining():.0f} s left)")
        start = time.monotonic()
        try:
            result = funcs[name](ctx)
        except Exception as exc:  # one broken part must not cost the others
            result = {"complete": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        result.setdefault("complete", True)
        result.update(part=name, card=card, date=ctx.date, seconds=round(time.monotonic() - start, 2), dry=dry)
        write_part(out, name, result)
        ctx.results[name] = result
        summary[name] = result
        status = "done" if result.get("complete") else f"incomplete ({result.get('error', 'budget')})"
        log(f"[{name}] {status} in {result['seconds']:.1f} s")
    write_summary(out, summary, card=card, day=ctx.date, dry=dry)
    return summary


def write_part(out: Path, name: str, result: dict[str, Any]) -> None:
    """JSON plus a markdown table (the part's ``table``: list of rows with a header)."""
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out / f"{name}.json")
    lines = [f"# {name}: {result.get('card', '?')}, {result.get('date', '?')}" + (" (dry run, CPU)" if result.get("dry") else ""), ""]
    if result.get("error"):
        lines += [f"Error: `{result['error']}`", ""]
    table = result.get("table")
    if table and table.get("rows"):
        lines.append("| " + " | ".join(table["header"]) + " |")
        lines.append("|" + "---|" * len(table["header"]))
        for row in table["rows"]:
            lines.append("| " + " | ".join(_fmt(c) for c in row) + " |")
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def write_summary(out: Path, summary: dict[str, Any], *, card: str, day: str, dry: bool) -> None:
    lines = [f"# GPU suite: {card}, {day}" + (" (dry run on CPU: no GPU figures)" if dry else ""), "",
             "| part | complete | seconds | note |", "|---|---|---|---|"]
    for name, res in summary.items():
        note = res.get("error") or res.get("skipped") or res.get("headline", "")
        lines.append(f"| {name} | {res.get('complete')} | {res.get('seconds', '')} | {str(note)[:120]} |")
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.4g}"
    return str(c)


def pack(out: Path, archive: Path) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname=out.name)
    return archive


def continue_from(out: Path, earlier: list[Path]) -> int:
    """Copy earlier runs' raw landscape measurements (``landscapes/*.jsonl``) into ``out``.

    Only files ``out`` lacks are written (a warm rerun keeps its own, newer ones); the same name
    in several earlier runs is concatenated. File names carry the card, so another card's
    measurements are never continued. Returns the number of files written.
    """
    merged: dict[str, list[str]] = {}
    for run in earlier:
        for f in sorted(run.glob("landscapes/*.jsonl")):
            merged.setdefault(f.name, []).append(f.read_text())
    target = out / "landscapes"
    written = 0
    for name, texts in merged.items():
        if not (target / name).exists():
            target.mkdir(parents=True, exist_ok=True)
            (target / name).write_text("".join(t if t.endswith("\n") else t + "\n" for t in texts))
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritune.bench.gpu_suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output directory (reused to continue a cut-short run)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget for all parts (default 540)")
    parser.add_argument("--dry", action="store_true", help="CPU rehearsal: Triton interpreter, tiny shapes, seconds")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--pack", type=Path, default=None, metavar="FILE.tar.gz", help="bundle --out into one archive at the end")
    parser.add_argument("--continue-from", type=Path, nargs="*", default=[], metavar="RUN",
                        help="earlier run folders (e.g. data/gpu_runs/*) whose landscape measurements on this card "
                             "this run extends instead of repeating")
    parser.add_argument("--promote", action="store_true",
                        help="write the landscapes' best configs into the package's built-in tuned table and exit")
    parser.add_argument("--vllm-path", default=None, metavar="DIR",
                        help="folder with vLLM's triton_unified_attention module (or a vllm/ tree of its files): the "
                             "serving benchmark's baseline; default $TRITUNE_VLLM_PATH, else the installed vllm, "
                             "else that baseline is skipped with the reason")
    args = parser.parse_args(argv)
    if args.promote:
        from ._suite_parts import promote_builtin

        n = promote_builtin(args.out)
        print(f"built-in table updated with {n} configs from {args.out}")
        return 0
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if args.vllm_path:
        os.environ["TRITUNE_VLLM_PATH"] = str(Path(args.vllm_path).resolve())  # read by varlen_bench
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    print(f"tritune GPU suite: python {platform.python_version()}, out={args.out}, budget {args.budget_s:.0f} s",
          flush=True)
    if args.continue_from:
        print(f"continuing {continue_from(args.out, args.continue_from)} landscape files from earlier runs", flush=True)
    summary = run_suite(args.out, budget_s=args.budget_s, dry=args.dry, parts=parts,
                        log=lambda m: print(m, flush=True))
    if args.pack:
        print(f"packed into {pack(args.out, args.pack)}")
    return 0 if all(r.get("complete") or r.get("skipped") for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
