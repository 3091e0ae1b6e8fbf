"""``tritune tune``: run a tuning job and store every trial in the tuning database."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import CLIError, add_db_argument, add_json_argument, print_table

_EPILOG = """examples:
  tritune tune                                   # GPU: the llama3-8b preset; no GPU: cpu-small on the interpreter
  tritune tune --kernel flash_attention --shape B=1 Hq=32 Hkv=8 seq=4096 D=128 dtype=bf16 causal=1 --budget 60
  tritune tune --model-config path/to/config.json --time-budget 120
  tritune tune --serving --model-config path/to/config.json   # only the model's serving steps (varlen_attention)
  tritune tune --effort quick                    # the learned parts' best few configs, refined briefly
  tritune tune --effort full --time-budget 900   # until the search stops improving, at most 15 minutes
  tritune tune --strategy tpe                    # plain Optuna TPE (gp, cmaes, random, exhaustive, ...)
  tritune tune --landscape data/kernel_tuner_cache/convolution_milo/A100.json.gz --budget 50
  tritune tune --advisor --cost-model conv.model --strategy cost-model   # advisor seeds, model-guided search
  tritune tune --preset llama3-70b --storage postgresql+psycopg2://user@host/db   # one worker per GPU

Rerunning the same command resumes the same studies: finished trials are never measured again.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune kernels for shapes, a preset or a model; store every trial in the database",
        description="Search each problem's config space with Optuna within a budget, measuring every config in "
        "worker processes (a config that crashes, hangs or computes wrong results costs one trial). Every trial is "
        "written to the tuning database as it finishes, and the best verified config per shape bucket is what "
        "the runtime then uses. Without a GPU this runs the Triton interpreter on CPU: its timings rank configs "
        "for the interpreter only and are never served to a GPU.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to tune (default: a preset for this machine)")
    what.add_argument("--kernel", default="flash_attention",
                      help="kernel family of --shape problems (default flash_attention; or paged_attention, "
                      "varlen_attention)")
    what.add_argument("--shape", nargs="+", action="append", metavar="KEY=VALUE", default=None,
                      help="one problem shape (repeat --shape for several); flash_attention keys: B Hq Hkv Sq Skv "
                      "(or seq) D dtype causal; paged_attention keys: S Hq Hkv D ctx block_size dtype; "
                      "varlen_attention keys: S T Sq ctx Hq Hkv D block_size dtype kv_dtype causal left right softcap "
                      "alibi sinks")
    what.add_argument("--preset", default=None, help="a named list of problems (see --list-presets)")
    what.add_argument("--model-config", default=None, metavar="PATH",
                      help="a transformers config.json (or its folder): prefill and decode problems from its "
                      "heads, KV heads and head dim, and serving steps (varlen_attention: 64 decode rows + a 512-token "
                      "chunk, decode of 8 and 64 sequences, 8 rows of 4 speculative tokens; 4k context, page 16) for "
                      "each kind of layer it has (sliding window, softcap, sinks)")
    what.add_argument("--serving", action="store_true",
                      help="serving steps only: with --model-config that model's, alone the 'serving' preset "
                      "(Llama 3 8B heads)")
    what.add_argument("--landscape", nargs="+", default=None, metavar="FILE",
                      help="recorded landscapes (Kernel Tuner cache .json.gz): tune by replaying them")
    what.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    how = p.add_argument_group("budget and search")
    how.add_argument("--effort", choices=("quick", "default", "full"), default=None,
                     help="quick: a quarter of the default trial budget (at least 4); default: the default budget; "
                     "full: no trial cap, until max(20, default budget) trials in a row gain less than 1%%")
    how.add_argument("--budget", type=int, default=None, metavar="N",
                     help="real measurements per problem, over all workers of the study (default: the preset's, "
                     "else 50 on a GPU and 10 on the interpreter; scaled by --effort); invalid configs are free")
    how.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                     help="hard wall-clock cap on the whole job, shared by its problems (each gets an equal share "
                     "of what is left); alone, the job runs until it is spent")
    how.add_argument("--strategy", default="default",
                     help="search strategy: default (the learned pipeline: the cost model ranks a candidate pool "
                     "with the advisor's opinion as one reweighted member, refit as results arrive), tpe, gp, cmaes, "
                     "random, exhaustive, cost-model (the same without the advisor), advisor (the advisor's proposals "
                     "first, then the cost-model search); see tritune bench-search for how they compare")
    how.add_argument("--advisor", nargs="?", const="builtin", default=None, metavar="CHECKPOINT",
                     help="seed every problem with the tensor-language-model advisor's top proposals: the checkpoint "
                     "shipped with tritune, or a directory written by `tritune advisor train`")
    how.add_argument("--advisor-seeds", type=int, default=8, metavar="K",
                     help="how many advisor proposals to measure first (default 8)")
    how.add_argument("--cost-model", default=None, metavar="PATH",
                     help="a model from `tritune cost-model train`: ranks the seeds and guides --strategy cost-model")
    how.add_argument("--seed", type=int, default=0, help="random seed of the strategy and of the test inputs")
    how.add_argument("--no-warm-start", action="store_true",
                     help="don't teach the search with earlier measurements of the same problem from other studies")
    run = p.add_argument_group("measurement")
    run.add_argument("--backend", choices=("auto", "gpu", "interpreter", "replay"), default="auto",
                     help="auto: replay for --landscape, else gpu when CUDA is available, else interpreter")
    run.add_argument("--workers", type=int, default=None,
                     help="interpreter: measuring processes (default 1); gpu: compile processes (default cores-1)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="per config: a config running longer is killed and recorded as timeout "
                     "(default 300 on the interpreter, 120 on a GPU)")
    run.add_argument("--aot-arch", type=int, default=None, metavar="SM",
                     help="interpreter only: also compile each config for sm_SM (e.g. 90) to catch what the "
                     "interpreter does not enforce")
    run.add_argument("--study-prefix", default="tritune", metavar="NAME",
                     help="name prefix of the Optuna studies (default tritune): the same prefix resumes, a new "
                     "one starts the search over")
    run.add_argument("--storage", default=None, metavar="URL",
                     help="Optuna storage shared by several workers: postgresql+psycopg2://user:pass@host/db, "
                     "sqlite:///file, or a journal file path (default: a journal next to the database)")
    out = p.add_argument_group("output")
    add_db_argument(out)
    add_json_argument(out)
    out.add_argument("--plot", default=None, metavar="PNG", help="write a convergence plot (needs matplotlib)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from tritune.tuner import PRESETS

    if args.list_presets:
        rows = [(p.name, p.device, len(p.problems), p.budget, p.description) for p in PRESETS.values()]
        print_table(rows, ("preset", "device", "problems", "budget", "description"))
        return 0
    _check_args(args)
    from tritune.db import TuningDB
    from tritune.tuner import tune

    advisor, cost_model = _advisor(args.advisor), _cost_model(args.cost_model)
    backend_name, problems, default_budget, landscapes = _problems(args)
    budget = _budget(args, default_budget)
    backend = _backend(backend_name, args, landscapes)
    if not backend.real_timing and not args.json:
        print("tritune: no CUDA GPU in use: measuring with the Triton interpreter on CPU. These CPU timings only "
              "rank configs for the interpreter; they are not GPU timings and are never served to a GPU.",
              file=sys.stderr)
    db = TuningDB(args.db) if args.db else TuningDB()
    try:
        with backend:
            report = tune(problems, backend, budget=budget, strategy=args.strategy, seed=args.seed, db=db,
                          advisor=advisor, cost_model=cost_model, n_advisor_seeds=args.advisor_seeds,
                          storage=args.storage, warm_start=not args.no_warm_start, progress=not args.no_progress,
                          study_prefix=args.study_prefix)
    except RuntimeError as exc:  # a backend that cannot run at all (no GPU, workers that cannot start)
        raise CLIError(str(exc).splitlines()[0]) from None
    finally:
        db.close()
        from tritune import runtime

        runtime.reload()  # this process's ops (and any caller of main()) see the new configs
    if args.plot:
        from tritune.tuner import plot_convergence

        plot_convergence(report, args.plot)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    _print_summary(report, args)
    return 0


def _budget(args: argparse.Namespace, default_trials: int) -> Any:
    """--effort, --budget and --time-budget as one Budget (see ``effort_budget``)."""
    import dataclasses

    from tritune.tuner import Budget, effort_budget

    if args.effort is None and args.time_budget is not None and args.budget is None:
        return Budget(trials=None, total_seconds=args.time_budget)  # the time alone decides
    budget = effort_budget(args.effort or "default", args.budget or default_trials, seconds=args.time_budget)
    if args.budget is not None and args.effort != "full":
        budget = dataclasses.replace(budget, trials=args.budget)  # an explicit trial count wins
    return budget


def _check_args(args: argparse.Namespace) -> None:
    given = [name for name, value in (("--shape", args.shape), ("--preset", args.preset),
                                      ("--model-config", args.model_config), ("--landscape", args.landscape)) if value]
    if len(given) > 1:
        raise CLIError(f"choose one of --shape, --preset, --model-config, --landscape (got {' and '.join(given)})")
    if args.serving and (args.shape or args.landscape or args.preset):
        raise CLIError("--serving takes --model-config or nothing (it is the 'serving' preset alone); "
                       "not --shape, --preset or --landscape")
    if args.budget is not None and args.budget < 1:
        raise CLIError(f"--budget {args.budget} must be at least 1")
    if args.time_budget is not None and args.time_budget <= 0:
        raise CLIError(f"--time-budget {args.time_budget} must be positive")
    if args.landscape and args.backend not in ("auto", "replay"):
        raise CLIError(f"--landscape replays recorded timings; --backend {args.backend} cannot measure them")
    if args.backend == "replay" and not args.landscape:
        raise CLIError("--backend replay needs --landscape FILE")
    if args.advisor_seeds < 0:
        raise CLIError(f"--advisor-seeds {args.advisor_seeds} must be 0 or more")
    from tritune.tuner._strategies import get_strategy

    try:
        get_strategy(args.strategy)
    except ValueError as exc:
        raise CLIError(f"--strategy: {exc}") from None


def _advisor(checkpoint: str | None) -> Any:
    """The advisor named by --advisor: None, the shipped checkpoint ("builtin") or a directory."""
    if checkpoint is None:
        return None
    from tritune.llm_advisor import TLMAdvisor

    try:
        return TLMAdvisor.load(None if checkpoint == "builtin" else checkpoint)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--advisor: {exc} (or give --advisor alone for the shipped checkpoint)") from None


def _cost_model(path: str | None) -> Any:
    if path is None:
        return None
    from tritune.cost_model import ModelVersionError, load_model

    try:
        return load_model(path)
    except (OSError, ValueError, ModelVersionError) as exc:
        raise CLIError(f"--cost-model: {exc}") from None


def _cuda_available() -> bool:
    from tritune.search_space import interpreting

    if interpreting():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _problems(args: argparse.Namespace) -> tuple[str, list[Any], int, list[Any]]:
    """(backend name, problems, default budget per problem, landscapes)."""
    from tritune.search_space import Hardware, detect
    from tritune.tuner import DEFAULT_CPU_PRESET, DEFAULT_GPU_PRESET, preset
    from tritune.tuner._problems import (
        dedupe,
        kernel_problem,
        landscape_problems,
        model_config_specs,
        parse_shape,
    )
    from tritune.tuner._problems import preset_specs as preset_specs_of

    if args.landscape:
        problems, landscapes = landscape_problems(args.landscape)
        return "replay", dedupe(problems), 50, landscapes
    backend = args.backend
    if backend == "auto":
        backend = "gpu" if _cuda_available() else "interpreter"
    hardware = detect() if backend == "gpu" else Hardware.cpu_interpreter()
    default_budget = 50 if backend == "gpu" else 10
    if args.shape:
        specs = [(args.kernel, parse_shape(args.kernel, [p for item in shape for p in item.replace(" ", ",").split(",") if p]))
                 for shape in args.shape]
    elif args.model_config:
        specs = model_config_specs(args.model_config, **({"include": ("serving",)} if args.serving else {}))
    else:
        name = args.preset or ("serving" if args.serving else DEFAULT_GPU_PRESET if backend == "gpu"
                               else DEFAULT_CPU_PRESET)
        specs = preset_specs_of(name)
        default_budget = preset(name).budget
        if preset(name).device == "gpu" and backend != "gpu":
            print(f"tritune: preset {name} has GPU-sized shapes; the interpreter will be very slow on them",
                  file=sys.stderr)
    if not specs:
        raise CLIError("nothing to tune: none of the requested kernels is available in this installation")
    return backend, dedupe(kernel_problem(k, s, hardware) for k, s in specs), default_budget, []


def _backend(name: str, args: argparse.Namespace, landscapes: list[Any]) -> Any:
    from tritune.tuner import GpuBackend, InterpreterBackend, ReplayBackend

    if name == "replay":
        return ReplayBackend(landscapes)
    if name == "gpu":
        try:
            return GpuBackend(compile_workers=args.workers, measure_timeout_s=args.timeout or 120.0,
                              seed=args.seed).start()
        except RuntimeError as exc:
            raise CLIError(str(exc)) from None
    return InterpreterBackend(workers=args.workers or 1, timeout_s=args.timeout or 300.0, aot_arch=args.aot_arch,
                              seed=args.seed).start()


def _print_summary(report: Any, args: argparse.Namespace) -> None:
    unit = "ms" if report.real_timing else "ms (cpu)"
    rows = []
    optimum = any(p.optimum_ms for p in report.problems)
    for p in report.problems:
        speed = p.speedup_vs_default
        row = [
            p.problem.name, f"{p.evaluations} ({p.measured_here} new)", p.failures,
            f"{p.best_ms:.4g}" if p.best_ms is not None else "-",
            f"{speed:.2f}x" if speed else "-",
            ",".join(f"{k}={_v(v)}" for k, v in (p.best_config or {}).items()) or "-",
            f"{p.wall_s:.0f} s", _time_to_best(p), p.stopped,
        ]
        if optimum:
            frac = p.fraction_of_optimum
            row.insert(4, f"{frac:.3f}" if frac is not None else "-")
        rows.append(row)
    header = ["problem", "trials", "failed", f"best {unit}", "vs default", "best config", "wall", "to best", "stopped"]
    if optimum:
        header.insert(4, "of optimum")
    print()
    print_table(rows, header)
    print()
    strategies = dict.fromkeys(f"{p.strategy} ({p.strategy_detail})" if p.strategy_detail else p.strategy
                               for p in report.problems)
    print(f"strategy {'; '.join(strategies)}")
    if optimum:
        print("of optimum: the recorded optimum of the replayed space / the best found (the space was measured "
              "exhaustively)")
    print(f"backend {report.backend}; {report.wall_s:.0f} s in all; database {report.db_path}")
    if not report.real_timing:
        print("note: interpreter wall times on CPU, not GPU timings; stored for the cpu-interpreter fingerprint only")
    first = next((p for p in report.problems if p.problem.spec is not None and p.best_config), None)
    if first is not None:
        shape = " ".join(f"{k}={_v(v)}" for k, v in first.problem.spec.to_dict().items())
        db = f" --db {args.db}" if args.db else ""
        print(f"query it: tritune query --kernel {first.problem.kernel} --shape {shape}{db}")


def _time_to_best(p: Any) -> str:
    if p.time_to_best_s is not None:
        return f"{p.time_to_best_s:.0f} s"
    return "earlier run" if p.best_ms is not None else "-"


def _v(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)
