"""The tuner's GPU acceptance check, in one command for a session with a GPU:

    python -m tritune.tuner.gpu_check --out $OUT/tune-check

1. the default strategy tunes one FlashAttention problem for ``--seconds`` (60) of wall time,
   counting worker start-up and every compile (fresh Triton and compile caches);
2. exhaustive search measures the same space (its own fresh caches) for up to
   ``--exhaustive-seconds`` per call, giving the optimum; when the space is not done, the same
   command again (on the still-warm machine) resumes it from ``--work``;
3. it reports the fraction of that optimum the default strategy reached (optimum time / best
   found), when it got within 98 %, and the same figures for exhaustive search, as JSON and a
   markdown table naming the device. Every trial also lands in the databases in ``--work``.

Nothing here is specific to a GPU except the backend, so the logic is tested on CPU with replay.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tritune.tuner._backend import MeasureBackend, Problem
from tritune.tuner._tune import Budget, tune

DEFAULT_SHAPE = "B=1,Hq=32,Hkv=8,seq=4096,D=128,dtype=bf16,causal=1"
TARGET = 0.98


def run_phase(problem: Problem, backend_factory: Callable[[str], MeasureBackend], *, strategy: str, seconds: float,
              db_path: Path, prefix: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune ``problem`` for ``seconds`` with a fresh backend; the timeline of the best time.

    ``previous`` (this phase's result from an earlier call) is continued: same study, wall time
    and timeline carried on.
    """
    offset = float(previous["wall_s"]) if previous else 0.0
    timeline: list[dict[str, float]] = list(previous["timeline"]) if previous else []
    best = [min((p["best_ms"] for p in timeline), default=float("inf"))]
    start = time.monotonic()

    def on_result(_p: Problem, _config: Any, result: Any) -> None:
        if result.ok and result.time_ms < best[0]:
            best[0] = result.time_ms
            timeline.append({"s": round(offset + time.monotonic() - start, 2), "best_ms": result.time_ms})

    backend = backend_factory(strategy)
    try:
        if hasattr(backend, "start"):
            backend.start()
        report = tune([problem], backend, budget=Budget(trials=None, seconds=seconds), strategy=strategy,
                      db=str(db_path), progress=sys.stderr.isatty(), on_result=on_result, warm_start=False,
                      study_prefix=prefix)
    finally:
        backend.close()
    p = report.problems[0]
    return {"strategy": strategy, "wall_s": round(offset + time.monotonic() - start, 2),
            "evaluations": p.evaluations, "statuses": p.statuses, "best_ms": p.best_ms,
            "best_config": p.best_config, "stopped": p.stopped, "timeline": timeline}


def time_to(phase: dict[str, Any], optimum_ms: float, fraction: float = TARGET) -> float | None:
    """Seconds until the phase's best was within ``fraction`` of the optimum (None: never)."""
    for point in phase["timeline"]:
        if optimum_ms / point["best_ms"] >= fraction:
            return point["s"]
    return None


def run_check(problem: Problem, backend_factory: Callable[[str], MeasureBackend], out: Path, *, work: Path,
              seconds: float = 60.0, exhaustive_seconds: float = 420.0, flops: float | None = None,
              device: str = "") -> dict[str, Any]:
    """Both phases (each skipped or continued when ``work`` holds an earlier call's state)."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if "default" not in state:
        state["default"] = run_phase(problem, backend_factory, strategy="default", seconds=seconds,
                                     db_path=work / "default.db", prefix=f"gpu-check-default-{int(time.time())}")
        state_path.write_text(json.dumps(state))
    previous = state.get("exhaustive")
    if previous is None or previous["stopped"] != "space exhausted":
        state["exhaustive"] = run_phase(problem, backend_factory, strategy="exhaustive", seconds=exhaustive_seconds,
                                        db_path=work / "exhaustive.db", prefix="gpu-check-exhaustive",
                                        previous=previous)
        state_path.write_text(json.dumps(state))
    tuned, exhaustive = state["default"], state["exhaustive"]
    valid = sum(1 for _ in problem.space)
    candidates = [b for b in (tuned["best_ms"], exhaustive["best_ms"]) if b]
    optimum = min(candidates) if candidates else None
    result: dict[str, Any] = {
        "device": device, "hardware": problem.hardware.key, "problem": problem.name, "valid_configs": valid,
        "exhaustive_complete": exhaustive["stopped"] == "space exhausted",
        "optimum_ms": optimum, "target_fraction": TARGET,
        "counting": "fraction of optimum = optimum time / best time found; optimum = best of both runs (the "
                    "exhaustive one when complete); wall time from backend start, compiles included",
    }
    for phase in (tuned, exhaustive):
        if optimum and phase["best_ms"]:
            phase["fraction_of_optimum"] = round(optimum / phase["best_ms"], 4)
            phase["seconds_to_target"] = time_to(phase, optimum)
        if flops and phase["best_ms"]:
            phase["tflops"] = round(flops / (phase["best_ms"] * 1e-3) / 1e12, 1)
    result["default"], result["exhaustive"] = tuned, exhaustive
    result["passed"] = bool(tuned.get("seconds_to_target") is not None and tuned["seconds_to_target"] <= seconds)
    (out / "tune_check.json").write_text(json.dumps(result, indent=2))
    (out / "tune_check.md").write_text(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Tuner GPU check: {r['problem']}", "", f"date: {time.strftime('%Y-%m-%d')}",
             f"device: {r['device'] or r['hardware']}; {r['valid_configs']} valid configs; exhaustive "
             f"{'complete' if r['exhaustive_complete'] else 'INCOMPLETE (time cap)'}; {r['counting']}.", "",
             "| strategy | wall s | evaluations | best ms | fraction of optimum | s to 98% | TFLOP/s |",
             "|---|---|---|---|---|---|---|"]
    for key in ("default", "exhaustive"):
        p = r[key]
        lines.append(f"| {key} | {p['wall_s']} | {p['evaluations']} | {p['best_ms']} | {p.get('fraction_of_optimum')} "
                     f"| {p.get('seconds_to_target')} | {p.get('tflops', '-')} |")
    lines.append("")
    lines.append(f"passed (default within {r['target_fraction']:.0%} of the optimum in time): {r['passed']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tritune.tuner.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for tune_check.json and tune_check.md")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tritune-tune-check"),
                    help="databases, studies and caches; a later call continues from here (default %(default)s)")
    ap.add_argument("--shape", default=DEFAULT_SHAPE, help=f"flash_attention shape (default {DEFAULT_SHAPE})")
    ap.add_argument("--seconds", type=float, default=60.0, help="wall budget of the default strategy")
    ap.add_argument("--exhaustive-seconds", type=float, default=420.0, help="cap on the exhaustive run")
    args = ap.parse_args(argv)

    from tritune.kernels import get_family
    from tritune.search_space import detect
    from tritune.tuner._gpu import GpuBackend
    from tritune.tuner._problems import kernel_problem, parse_shape

    os.environ.pop("TRITON_INTERPRET", None)
    hardware = detect()
    if hardware.is_interpreter:
        print("gpu_check: no CUDA GPU here; nothing to check", file=sys.stderr)
        return 2
    spec = parse_shape("flash_attention", args.shape)
    problem = kernel_problem("flash_attention", spec, hardware)

    def factory(strategy: str) -> MeasureBackend:
        # Fresh caches per run: the timed run pays for every compile, as a user's first run would.
        cache = args.work / f"cache-{strategy}"
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env.update(TRITON_CACHE_DIR=str(cache / "triton"), TRITUNE_CACHE_DIR=str(cache / "tritune"))
        return GpuBackend(env=env)

    flops = get_family("flash_attention").work(problem.spec).get("flops")
    result = run_check(problem, factory, args.out, work=args.work, seconds=args.seconds,
                       exhaustive_seconds=args.exhaustive_seconds, flops=flops, device=hardware.name)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
