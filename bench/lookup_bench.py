"""Warm cost of the runtime's config lookup (the per-call overhead of the public ops).

    python -m tritune.bench.lookup_bench [--calls 200000] [--json]

Measures ``Dispatcher.lookup(spec)`` after the first (cold) call, for a spec whose bucket is
tuned in a temporary database and for one served by the default config. Reports the median of
per-batch means, in microseconds per call, and how the time splits between building the spec
from sizes (what an op does per call) and the lookup itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tritune.db import Trial, TuningDB
from tritune.kernels import kernel_hash
from tritune.runtime import Dispatcher
from tritune.search_space import FlashAttentionSpec, Hardware, space_for


def _per_call_us(fn, calls: int, batches: int = 20) -> float:
    per_batch = max(1, calls // batches)
    samples = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(per_batch):
            fn()
        samples.append((time.perf_counter() - start) / per_batch * 1e6)
    return statistics.median(samples)


def run(calls: int) -> dict:
    hw = Hardware.from_spec("H100", "bench")
    spec = FlashAttentionSpec(4, 32, 8, 2048, 2048, 128, "bf16", True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tuned.db"
        with TuningDB(path) as db:
            db.record_trial(Trial(hardware=hw, kernel=spec.kernel, kernel_hash=kernel_hash(spec.kernel),
                                  bucket=spec.bucket().key, spec=spec.to_dict(),
                                  config=space_for(spec, hw).enumerate()[1], status="ok", backend="gpu",
                                  real_timing=True, time_ms=1.0))
        disp = Dispatcher(hw, db_path=path, use_builtin=False)
        untuned = FlashAttentionSpec(4, 32, 8, 2048, 2048, 64, "bf16", True)
        assert disp.lookup(spec).rule == "exact" and disp.lookup(untuned).rule == "default"
        results = {
            "lookup_tuned_us": _per_call_us(lambda: disp.lookup(spec), calls),
            "lookup_default_us": _per_call_us(lambda: disp.lookup(untuned), calls),
            "build_spec_and_lookup_us": _per_call_us(
                lambda: disp.lookup(FlashAttentionSpec(4, 32, 8, 2048, 2048, 128, "bf16", True)), calls // 4),
            # what the ops do per call: a lookup keyed by raw sizes, the spec built only when cold
            "lookup_by_sizes_us": _per_call_us(
                lambda: disp.lookup_by((4, 32, 8, 2048, 2048, 128, "bf16", True),
                                       lambda: FlashAttentionSpec(4, 32, 8, 2048, 2048, 128, "bf16", True)), calls),
        }
    results["calls"] = calls
    results["goal_us"] = 5.0
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000, help="lookups per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    res = run(args.calls)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"warm lookup, tuned bucket:      {res['lookup_tuned_us']:.3f} us/call (median of batch means)")
    print(f"warm lookup, default config:    {res['lookup_default_us']:.3f} us/call")
    print(f"lookup keyed by raw sizes:      {res['lookup_by_sizes_us']:.3f} us/call (the ops' per-call path)")
    print(f"build spec from sizes + lookup: {res['build_spec_and_lookup_us']:.3f} us/call (cold-path cost)")
    print(f"goal: median under {res['goal_us']} us per lookup")


if __name__ == "__main__":
    main()
