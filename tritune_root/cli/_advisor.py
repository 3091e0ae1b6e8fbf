"""``tritune advisor``: train the tensor-language-model advisor, ask it for configs, evaluate it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import CLIError, add_db_argument, add_json_argument, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "advisor", help="train, query and evaluate the language-model advisor that seeds every search",
        description="The advisor is a small GPT-2 language model trained from scratch on tuning records "
        "(sentences of hardware words, problem words and config words). It proposes the configs it finds most "
        "likely to be the fastest, only ever valid ones. The package ships a checkpoint trained on the bundled "
        "Kernel Tuner landscapes; 'train' makes a new one from landscapes and/or a tuning database.")
    asub = p.add_subparsers(dest="advisor_command", metavar="ACTION", required=True)

    t = asub.add_parser(
        "train", help="train an advisor from scratch on landscapes and/or the tuning database",
        description="Pre-train on sampled valid configs, then fine-tune on the measured configs labelled by how "
        "good they were in their problem. Reproduce the shipped checkpoint with: "
        "tritune advisor train --landscape data/kernel_tuner_cache data/gpu_runs --no-db --out llm_advisor/checkpoint")
    t.add_argument("--landscape", nargs="*", default=[], metavar="PATH",
                   help="landscape files or directories (searched recursively for *.json.gz / *.json)")
    add_db_argument(t)
    t.add_argument("--no-db", action="store_true", help="do not read the tuning database")
    t.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    t.add_argument("--no-attention-spaces", action="store_true",
                   help="do not pre-train on the attention kernels' spaces (grammar only, no timings)")
    _add_train_options(t)
    add_json_argument(t)
    t.set_defaults(func=run_train)

    s = asub.add_parser(
        "suggest", help="print the advisor's top-k configs for a shape (or a landscape's problem)",
        description="Ask the advisor for its k most likely fastest configs, each valid in the problem's space, "
        "with its log-probability.",
        epilog="examples: tritune advisor suggest --kernel flash_attention --shape B=1 Hq=32 Hkv=8 seq=2048 D=128 "
        "--hardware H100 | tritune advisor suggest --landscape data/kernel_tuner_cache/convolution_milo/A100.json.gz")
    s.add_argument("--kernel", help="flash_attention or paged_attention (with --shape)")
    s.add_argument("--shape", nargs="+", default=[], metavar="KEY=VALUE", help="problem shape, as for 'tritune query'")
    s.add_argument("--landscape", metavar="FILE", help="suggest for this recorded landscape's space and problem")
    s.add_argument("--hardware", metavar="NAME",
                   help="a device from the spec table (e.g. H100, MI250X); default: this machine "
                   "(or the landscape's GPU)")
    s.add_argument("--checkpoint", metavar="DIR", help="advisor checkpoint (default: the shipped one)")
    s.add_argument("-k", type=int, default=10, help="how many configs (default 10)")
    add_json_argument(s)
    s.set_defaults(func=run_suggest)

    e = asub.add_parser(
        "eval", help="leave-one-out: train on all landscapes but one, score the proposals on the one left out",
        description="For each landscape file in turn, train an advisor from scratch on the other files of its "
        "kernel (its other GPUs) and "
        "measure its top-k proposals on the held-out file: first_fraction (optimum time / time of the first "
        "proposal, 0 if it failed) and top10_fraction (best of the first ten). Printed next to naive transfer "
        "(configs by mean log-rank on the other GPUs of the same kernel) and the cost model's top 10 "
        "(trained on the same files, the same portfolio rule): whether the language model adds to it.",
        epilog="example: tritune advisor eval --landscape data/kernel_tuner_cache/convolution_milo "
        "data/kernel_tuner_cache/dedispersion_milo --json")
    e.add_argument("--landscape", nargs="+", required=True, metavar="PATH", help="landscape files or directories")
    e.add_argument("--target", nargs="*", default=None, metavar="NAME",
                   help="hold out only these (e.g. convolution_milo/A100); default: every file")
    e.add_argument("--cross-kernel", action="store_true",
                   help="also train on the files of other kernels (default: only the held-out file's kernel, "
                   "its other GPUs)")
    e.add_argument("-k", type=int, default=10, help="proposals per target (default 10)")
    e.add_argument("--no-cost-model", action="store_true",
                   help="skip the cost-model baseline (a few seconds per target)")
    _add_train_options(e)
    add_json_argument(e)
    e.set_defaults(func=run_eval)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from tritune.llm_advisor import TrainOptions

    d = TrainOptions()
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps, help=f"default {d.pretrain_steps}")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help=f"default: {d.steps_per_problem} per measured problem (device x kernel x shape), 2000..20000")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch CPU threads (default {d.threads}: on a shared CPU more threads are slower)")


def _train_options(args: argparse.Namespace):
    from tritune.llm_advisor import TrainOptions

    for name in ("pretrain_steps", "finetune_steps", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < (1 if name == "threads" else 0):
            raise CLIError(f"--{name.replace('_', '-')}={getattr(args, name)} must be positive")
    return TrainOptions(pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps, seed=args.seed,
                        threads=args.threads)


def _landscapes(paths: list[str]):
    from tritune.search_space import load_landscapes

    for raw in paths:
        if not Path(raw).exists():
            raise CLIError(f"landscape {raw} does not exist")
    try:
        return load_landscapes(paths)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, file=sys.stderr, leave=False, disable=not sys.stderr.isatty())

    def update(phase: str, step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.set_postfix_str(f"{phase} loss {loss:.3f}")
        bar.update(step - bar.n)

    return bar, update


def run_train(args: argparse.Namespace) -> int:
    from tritune.llm_advisor import attention_spaces, train

    records = [r for land in _landscapes(args.landscape) for r in land.records()] if args.landscape else []
    if not args.no_db:
        from tritune.db import TuningDB, default_db_path

        path = Path(args.db) if args.db else default_db_path()
        if path.exists():
            with TuningDB(path) as db:
                records.extend(db.records())
        elif args.db:
            raise CLIError(f"database {path} does not exist")
    if not records:
        raise CLIError("no training records: pass --landscape PATH... and/or a --db with trials")
    options = _train_options(args)
    bar, update = _progress_bar("training advisor")
    with bar:
        lm = train(records, options=options, spaces=() if args.no_attention_spaces else attention_spaces(),
                   progress=update)
    out = lm.save(args.out)
    size = sum(f.stat().st_size for f in out.iterdir())
    summary = {"checkpoint": str(out), "bytes": size, "records": len(records), "words": len(lm.vocab),
               "groups": len(lm.meta.get("groups", [])), **lm.meta.get("training", {})}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {out} ({size / 1e6:.2f} MB): {summary['groups']} problems, {len(records)} records, "
              f"{summary['words']} words, trained in {summary['train_seconds']:.0f} s")
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    from tritune.llm_advisor import TLMAdvisor, landscape_problem
    from tritune.search_space import Hardware, detect, space_for

    if args.k < 1:
        raise CLIError(f"-k {args.k} must be at least 1")
    if (args.landscape is None) == (args.kernel is None):
        raise CLIError("pass either --kernel with --shape, or --landscape FILE")
    hardware = Hardware.from_spec(args.hardware) if args.hardware else None
    if args.landscape:
        (land,) = _landscapes([args.landscape])
        hardware = hardware or land.hardware
        kernel, problem, space = land.kernel, landscape_problem(land), land.space
    else:
        from . import parse_shape_args

        spec = parse_shape_args(args.kernel, args.shape)
        hardware = hardware or detect()
        kernel, problem, space = spec.kernel, spec.to_dict(), space_for(spec, hardware)
    advisor = TLMAdvisor.load(args.checkpoint)
    proposals = advisor.propose(hardware, kernel, problem, space, args.k)
    known = advisor.knows(kernel)
    ranking = advisor.ranking if known else "grammar only: default first, then likelihood"
    if args.json:
        print(json.dumps({"hardware": hardware.key, "kernel": kernel, "problem": problem, "ranking": ranking,
                          "trained_on_kernel": known, "seen_device": advisor.seen(hardware, kernel),
                          "proposals": [{"config": dict(p.config), "score": p.score} for p in proposals]}, indent=2))
    else:
        print(f"{kernel} on {hardware.name}: top {len(proposals)} of the advisor (ranking: {ranking})")
        if not known:
            print(f"note: the advisor was trained on no measurements of {kernel}; train it on a tuning database "
                  "with 'tritune advisor train' to rank by speed")
        names = list(space.names)
        print_table([[i + 1, *(p.config[n] for n in names), round(p.score, 3)] for i, p in enumerate(proposals)],
                    ["#", *names, "score"])
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tritune.llm_advisor import evaluate, geomean

    landscapes = _landscapes(args.landscape)
    if args.target:
        unknown = sorted(set(args.target) - {land.name for land in landscapes})
        if unknown:
            raise CLIError(f"--target {unknown} not among the landscapes: {[land.name for land in landscapes]}")
    if args.k < 1:
        raise CLIError(f"-k {args.k} must be at least 1")
    options = _train_options(args)
    from tqdm import tqdm

    todo = [land for land in landscapes if not args.target or land.name in args.target]
    with tqdm(total=len(todo), desc="leave-one-out", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        results = []
        for target in todo:
            bar.set_postfix_str(target.name)
            results.extend(evaluate(landscapes, k=args.k, options=options, same_kernel_only=not args.cross_kernel,
                                    targets=[target.name], cost_model_baseline=not args.no_cost_model))
            bar.update(1)
    summary = {
        "targets": len(results),
        "geomean_first_fraction": geomean([r.first_fraction for r in results]),
        "geomean_top10_fraction": geomean([r.top10_fraction for r in results]),
        "naive_geomean_first_fraction": geomean([r.naive_first_fraction for r in results]),
        "naive_geomean_top10_fraction": geomean([r.naive_top10_fraction for r in results]),
        "cost_model_geomean_top10_fraction": (None if args.no_cost_model else
                                              geomean([r.cost_model_top10_fraction or 0.0 for r in results])),
        "train_seconds_mean": sum(r.train_seconds for r in results) / max(1, len(results)),
    }
    if args.json:
        print(json.dumps({"summary": summary, "results": [r.to_dict() for r in results]}, indent=2))
        return 0
    print_table([(r.target, r.device, r.first_fraction, r.top10_fraction, r.naive_first_fraction, r.naive_top10_fraction,
                  "-" if r.cost_model_top10_fraction is None else r.cost_model_top10_fraction,
                  round(r.train_seconds)) for r in results],
                ("target", "device", "first", "top10", "naive first", "naive top10", "cost model top10", "train s"))
    cm = summary["cost_model_geomean_top10_fraction"]
    print(f"geometric mean: first {summary['geomean_first_fraction']:.3f}, top10 {summary['geomean_top10_fraction']:.3f} "
          f"(naive transfer: {summary['naive_geomean_first_fraction']:.3f}, {summary['naive_geomean_top10_fraction']:.3f}"
          + ("" if cm is None else f"; cost model top10: {cm:.3f}") + ")")
    return 0
