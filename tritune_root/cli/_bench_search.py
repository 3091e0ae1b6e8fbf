"""``tritune bench-search``: compare search strategies on recorded landscapes."""

from __future__ import annotations

import argparse
import json
import sys

from . import CLIError, add_json_argument, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-search", help="compare search strategies on recorded landscapes (fraction of optimum per budget)",
        description="Run search strategies on recorded landscapes (Kernel Tuner cache files or tritune's own GPU "
        "recordings) and report, per landscape and budget, the fraction of optimum reached: optimum time / best "
        "time found after N real evaluations (1.0 = found the optimum). Configs absent from the recording are "
        "invalid and free; failed ones cost one evaluation; a config proposed twice is not measured twice. "
        "Mean and spread are over --repeats seeds; 'random' is the exact expectation of uniform random search "
        "without replacement, computed from the landscape.",
        epilog="examples: tritune bench-search --landscape data/kernel_tuner_cache/convolution_milo "
        "--strategy default cost-model tpe --budget 10 20 50 --repeats 5 --ablation | "
        "tritune bench-search --landscape data/kernel_tuner_cache/convolution_milo --strategy default random --plot "
        "bench.png")
    p.add_argument("--landscape", nargs="+", required=True, metavar="FILE",
                   help="landscape files (.json or .json.gz) or folders of them")
    p.add_argument("--strategy", nargs="+", default=["default"],
                   help="strategies to run: default (the learned pipeline), tpe, gp, cmaes, random, exhaustive, "
                   "cost-model, advisor (default: default)")
    p.add_argument("--ablation", action="store_true",
                   help="also run the default pipeline without its advisor (same seeds) and report the advisor's "
                   "share of the pipeline's gain over random search")
    p.add_argument("--budget", nargs="+", type=int, default=[10, 20, 50, 100], metavar="N",
                   help="evaluation budgets to report (default 10 20 50 100); each run goes to the largest")
    p.add_argument("--repeats", type=int, default=5, help="runs per strategy and landscape, seeds 0..R-1 (default 5)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--option", nargs="+", default=[], metavar="KEY=VALUE",
                   help="strategy options, e.g. n_startup=10 (JSON values)")
    add_json_argument(p)
    p.add_argument("--plot", default=None, metavar="PNG", help="write a plot of the fractions (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--option {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def run(args: argparse.Namespace) -> int:
    from tritune.search_space import load_landscapes
    from tritune.tuner import bench_search, get_strategy

    if args.repeats < 1:
        raise CLIError(f"--repeats {args.repeats} must be at least 1")
    if any(b < 1 for b in args.budget):
        raise CLIError(f"--budget values must be positive, got {args.budget}")
    for s in args.strategy:
        get_strategy(s)
    landscapes = load_landscapes(args.landscape)
    arms = len(args.strategy) + (("default" not in args.strategy) + 1 if args.ablation else 0)
    total = len(landscapes) * arms * args.repeats
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="bench-search", unit="run", file=sys.stderr, dynamic_ncols=True)
    try:
        report = bench_search(landscapes, args.strategy, budgets=args.budget, repeats=args.repeats, seed=args.seed,
                              options=_options(args.option), on_run=(lambda r: bar.update(1)) if bar else None,
                              ablation=args.ablation)
    finally:
        if bar is not None:
            bar.close()
    if args.plot:
        from tritune.tuner import plot_bench

        plot_bench(report, args.plot)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    budgets = report.budgets
    header = ["landscape", "strategy", *(f"@{b}" for b in budgets)]
    rows = []
    by = {(r["landscape"], r["strategy"], r["budget"]): r for r in report.summary()}
    for landscape in dict.fromkeys(r["landscape"] for r in report.summary()):
        for s in dict.fromkeys(r["strategy"] for r in report.summary()):
            rows.append([landscape, s, *(f"{by[(landscape, s, b)]['fraction_mean']:.3f}±{by[(landscape, s, b)]['fraction_std']:.3f}"
                                         for b in budgets)])
        rows.append([landscape, "random (exact)", *(f"{report.random_expected[landscape][b]:.3f}" for b in budgets)])
    print_table(rows, header)
    print()
    means = report.means()
    mean_rows = []
    for s in dict.fromkeys(m["strategy"] for m in means):
        mean_rows.append([s, *(f"{m['fraction_mean']:.3f}" for m in means if m["strategy"] == s)])
    mean_rows.append(["random (exact)", *(f"{m['random_expected_fraction']:.3f}" for m in means
                                          if m["strategy"] == means[0]["strategy"])])
    print_table(mean_rows, ["mean over landscapes", *(f"@{b}" for b in budgets)])
    ablation = report.ablation()
    if ablation:
        print()
        print_table([[f"@{a['budget']}", f"{a['with_advisor']:.3f}", f"{a['without_advisor']:.3f}",
                      f"{a['random_expected_fraction']:.3f}",
                      "-" if a["advisor_share_of_gain"] is None else f"{a['advisor_share_of_gain']:.1%}"]
                     for a in ablation],
                    ["ablation", "default", "default without advisor", "random (exact)", "advisor's share of the gain"])
        print("advisor's share of the gain = (default - default without advisor) / (default - random), mean over "
              "landscapes, same seeds")
    from tritune.tuner import DEFAULT_STRATEGY

    print(f"\nfraction of optimum = optimum time / best found after N real evaluations; mean±std over "
          f"{args.repeats} repeats; default = {DEFAULT_STRATEGY} (learned parts trained leave-one-out)")
    return 0
