"""Cost-model timing benchmark: training on 50k records, ranking 10k candidates (CPU only).

Run: ``python -m tritune.bench.cost_model_bench [--json] [--threads N]``. Reports wall time of
``GBTCostModel.fit`` on 50,000 records (dedispersion landscapes of five GPUs, every config
kept as measured) and of ``predict`` on 10,000 candidate configs of the sixth GPU, cold (the
features are computed in the call, nothing cached), as the median of ``--repeats`` runs. The
issue's bars: training under 2 minutes and ranking under 1 s on 2 CPU cores. It is a benchmark,
not a test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "kernel_tuner_cache"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA / "dedispersion_milo"), help="folder of one kernel's landscapes")
    p.add_argument("--train-records", type=int, default=50_000)
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads for the tree code (default 1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from tritune.cost_model import GBTCostModel
    from tritune.search_space import load_landscapes

    landscapes = load_landscapes([args.data])
    target, others = landscapes[0], landscapes[1:]
    records = [r for ls in others for r in ls.records()]
    if len(records) < args.train_records:
        raise SystemExit(f"{args.data} holds {len(records)} training records, fewer than {args.train_records}")
    step = len(records) / args.train_records
    records = [records[int(i * step)] for i in range(args.train_records)]
    configs = [dict(e.values) for e in target][: args.candidates]
    problem = {"problem_size": target.problem_size}

    fits, model = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        model = GBTCostModel(threads=args.threads).fit(records)
        fits.append(time.perf_counter() - start)
    ranks = []
    for _ in range(args.repeats):
        fresh = model.fresh()
        pool = [dict(c) for c in configs]  # a new list: no cached features or predictions
        start = time.perf_counter()
        fresh.predict(target.hardware, target.kernel, problem, target.space, pool)
        ranks.append(time.perf_counter() - start)
    out = {
        "what": "GBTCostModel.fit on N records / predict (cold, features included) on M candidates; median of repeats",
        "data": args.data,
        "train_records": len(records),
        "train_devices": len(others),
        "fit_s_median": round(statistics.median(fits), 2),
        "fit_s_all": [round(x, 2) for x in fits],
        "candidates": len(configs),
        "rank_s_median": round(statistics.median(ranks), 3),
        "rank_s_all": [round(x, 3) for x in ranks],
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "machine": platform.processor() or platform.machine(),
        "bars": {"fit_s": 120, "rank_s": 1.0},
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"fit on {out['train_records']} records ({out['train_devices']} devices): "
              f"{out['fit_s_median']} s median of {fits and len(fits)} (bar 120 s)")
        print(f"rank {out['candidates']} candidates: {out['rank_s_median']} s median (bar 1 s)")
        print(f"threads={args.threads}, {out['cpu_count']} CPUs, load average {out['load_average_1m']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
