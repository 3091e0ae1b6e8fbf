"""``tritune cost-model``: train, evaluate and query the learned cost model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import CLIError, add_json_argument, parse_shape_args, print_table

_EVAL_EPILOG = (
    "example: tritune cost-model eval --landscape data/kernel_tuner_cache/convolution_milo "
    "data/kernel_tuner_cache/dedispersion_milo --json"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost-model", help="train and evaluate the learned cost model that ranks configs",
                       description="The cost model ranks the configs of a problem before they are measured: "
                       "gradient-boosted trees per device, mixed by learned hardware similarity, refit online "
                       "while tuning (the 'cost-model' search strategy).")
    csub = p.add_subparsers(dest="cost_model_command", metavar="ACTION", required=True)

    t = csub.add_parser("train", help="train a model on landscapes or a tuning database and save it",
                        description="Train on recorded landscapes (--landscape) or every trial of a tuning database "
                        "(--db) and write the model file (with its feature version) to --output.",
                        epilog="example: tritune cost-model train --landscape data/kernel_tuner_cache/convolution_milo "
                        "--output conv.model")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--landscape", nargs="+", metavar="FILE", help="landscape files or directories of them")
    src.add_argument("--db", metavar="PATH", help="a tuning database file")
    t.add_argument("--kernel", help="only records of this kernel")
    t.add_argument("--output", "-o", required=True, metavar="MODEL", help="model file to write")
    _model_arguments(t)
    add_json_argument(t)
    t.set_defaults(func=run_train)

    e = csub.add_parser("eval", help="leave-one-GPU-out ranking accuracy on landscapes",
                        description="For each landscape file: train on the other files of the same kernel, rank every "
                        "recorded config of the held-out one, and report pairwise accuracy (share of config pairs "
                        "ordered correctly), peak@1 and peak@5 (optimum / best true time among the top k; TenSet's "
                        "definitions), next to the naive-transfer baseline (mean log-rank on the other files).",
                        epilog=_EVAL_EPILOG)
    e.add_argument("--landscape", nargs="+", required=True, metavar="FILE",
                   help="landscape files or directories; at least two per kernel")
    e.add_argument("--shots", type=int, default=0,
                   help="tell the model this many random configs of the held-out file first and score the rest "
                   "(what the model knows after that many measurements while tuning; default 0: zero-shot)")
    e.add_argument("--seed", type=int, default=0, help="seed of the --shots draw")
    _model_arguments(e)
    add_json_argument(e)
    e.set_defaults(func=run_eval)

    r = csub.add_parser("rank", help="rank the configs of a problem with a saved model",
                        description="Load a model and print the configs it predicts fastest: either every recorded "
                        "config of one landscape file (with its true time), or the valid configs of a kernel "
                        "family's space for a shape on a device from the spec table.",
                        epilog="example: tritune cost-model rank --model conv.model --landscape "
                        "data/kernel_tuner_cache/convolution_milo/A100.json.gz --top 5")
    r.add_argument("--model", required=True, metavar="MODEL", help="a file written by 'tritune cost-model train'")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--landscape", metavar="FILE", help="rank this landscape's recorded configs")
    what.add_argument("--kernel", help="rank this kernel family's valid configs (with --shape and --hardware)")
    r.add_argument("--shape", nargs="+", metavar="KEY=VALUE", help="problem shape (as in 'tritune query')")
    r.add_argument("--hardware", default="H100", metavar="NAME", help="device from the spec table (default H100)")
    r.add_argument("--top", type=int, default=10, help="how many configs to print (default 10)")
    add_json_argument(r)
    r.set_defaults(func=run_rank)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="model_kind", choices=("transfer", "pooled"), default="transfer",
                   help="transfer (default): tree models per device mixed by learned hardware similarity; "
                   "pooled: one tree model with hardware columns (the baseline it is compared with)")
    p.add_argument("--max-iter", type=int, default=100, help="boosting iterations per device model (default 100)")
    p.add_argument("--max-records-per-group", type=int, default=None, metavar="N",
                   help="subsample problems with more measurements than N (faster, for quick looks)")
    p.add_argument("--compile-features", action="store_true",
                   help="add AOT-compiler features (registers, spills, shared memory) for kernel families; "
                   "about a second per uncached config")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads for the tree code (default 1)")


def _model(args: argparse.Namespace) -> Any:
    from tritune.cost_model import GBTCostModel, PooledGBTCostModel

    if args.max_iter < 1:
        raise CLIError(f"--max-iter={args.max_iter} must be at least 1")
    if args.model_kind == "pooled":
        if args.compile_features:
            raise CLIError("--compile-features is only implemented for --model transfer")
        return PooledGBTCostModel(max_iter=args.max_iter, threads=args.threads)
    return GBTCostModel(max_iter=args.max_iter, compile_features=args.compile_features,
                        max_records_per_group=args.max_records_per_group, threads=args.threads)


def _landscapes(paths: list[str]) -> list[Any]:
    from tritune.search_space import load_landscapes

    return load_landscapes(paths)


def run_train(args: argparse.Namespace) -> int:
    from tritune.cost_model import save_model

    if args.landscape:
        records = [r for ls in _landscapes(args.landscape) for r in ls.records()]
        source = {"landscapes": args.landscape}
    else:
        from tritune.db import TuningDB

        if not Path(args.db).exists():
            raise CLIError(f"database {args.db} does not exist")
        with TuningDB(args.db) as db:
            records = db.records(kernel=args.kernel)
        source = {"db": args.db}
    if args.kernel:
        records = [r for r in records if r.kernel == args.kernel]
    if not records:
        raise CLIError("no training records" + (f" for kernel {args.kernel!r}" if args.kernel else "") +
                       "; tune something first or pass landscape files")
    if args.model_kind != "transfer":
        raise CLIError("train saves --model transfer models only (pooled is an evaluation baseline)")
    model = _model(args).fit(records)
    path = save_model(model, args.output, meta={"source": source, "records": len(records)})
    info = {"output": str(path), "records": len(records), **model.describe()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for kernel, k in info["kernels"].items():
            devices = ", ".join(f"{m['hardware']} ({m['records']} records, {m['problems']} problems)" for m in k["members"])
            print(f"{kernel}: {len(k['features'])} features; devices: {devices}")
        print(f"wrote {path} ({len(records)} records)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tritune.cost_model import evaluate_logo

    landscapes = _landscapes(args.landscape)
    bar = tqdm(total=len(landscapes), desc="leave-one-GPU-out", unit="file", file=sys.stderr,
               disable=not sys.stderr.isatty())
    result = evaluate_logo(landscapes, lambda: _model(args), shots=args.shots, seed=args.seed,
                           on_result=lambda _: bar.update())
    bar.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = []
    for r in result["results"]:
        n = r["naive_transfer"]
        rows.append((r["file"], r["configs"], r["pairwise_accuracy"], r["peak@1"], r["peak@5"],
                     n["pairwise_accuracy"], n["peak@1"], n["peak@5"], r["fit_s"]))
    for kernel, m in result["mean_by_kernel"].items():
        rows.append((f"mean {kernel}", "", *_mean_cells(m)))
    rows.append(("mean (all files)", "", *_mean_cells(result["mean"])))
    print_table(rows, ("held-out file", "configs", "pairwise", "peak@1", "peak@5", "naive pw", "naive p@1",
                       "naive p@5", "fit_s"))
    print(f"\n{result['definition']}" + (f"; shots={args.shots}" if args.shots else ""))
    return 0


def _mean_cells(m: dict[str, Any]) -> tuple[Any, ...]:
    n = m["naive_transfer"]
    return (m["pairwise_accuracy"], m["peak@1"], m["peak@5"], n["pairwise_accuracy"], n["peak@1"], n["peak@5"], "")


def run_rank(args: argparse.Namespace) -> int:
    import numpy as np
    from tritune.cost_model import load_model

    model = load_model(args.model)
    if args.top < 1:
        raise CLIError(f"--top={args.top} must be at least 1")
    if args.landscape:
        ls = _landscapes([args.landscape])[0]
        entries = list(ls)
        configs = [dict(e.values) for e in entries]
        truth = [e.time_ms for e in entries]
        hardware, kernel, space = ls.hardware, ls.kernel, ls.space
        problem = dict(ls.spec) if ls.spec else {"problem_size": ls.problem_size}
    else:
        from tritune.search_space import Hardware, space_for

        if not args.shape:
            raise CLIError("--kernel needs --shape, e.g. --shape B=1 Hq=32 Hkv=8 seq=2048 D=128")
        spec = parse_shape_args(args.kernel, args.shape)
        hardware = Hardware.from_spec(args.hardware)
        space = space_for(spec, hardware)
        configs = space.enumerate()
        truth = [None] * len(configs)
        kernel, problem = spec.kernel, spec.to_dict()
    scores = model.predict(hardware, kernel, problem, space, configs)
    order = np.argsort(scores, kind="stable")[: args.top]
    rows = [{"rank": i + 1, "config": configs[j], "score": float(scores[j]), "true_time_ms": truth[j]}
            for i, j in enumerate(order)]
    if args.json:
        print(json.dumps({"hardware": hardware.name, "kernel": kernel, "candidates": len(configs), "top": rows}, indent=2))
        return 0
    print(f"{kernel} on {hardware.name}: {len(configs)} candidates, predicted fastest first")
    print_table([(r["rank"], ",".join(f"{k}={v}" for k, v in r["config"].items()), r["score"],
                  "-" if r["true_time_ms"] is None else r["true_time_ms"]) for r in rows],
                ("rank", "config", "score", "true time_ms"))
    return 0
