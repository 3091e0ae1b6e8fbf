"""``tritune db``: inspect, export, import and merge tuning databases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import CLIError, add_db_argument, add_json_argument, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="inspect, export, import and merge tuning databases",
                       description="Manage the tuning database (every trial, and the best verified config per "
                       "hardware, kernel, kernel version and shape bucket).")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    s = dsub.add_parser("stats", help="counts of trials and tuned configs per hardware and kernel")
    add_db_argument(s)
    add_json_argument(s)
    s.set_defaults(func=run_stats)

    e = dsub.add_parser("export", help="write the best configs as JSON to share with a team",
                        description="Write the best configs as JSON (stdout, or --output FILE). "
                        "'tritune db import' reads it back on another machine.")
    add_db_argument(e)
    e.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    e.add_argument("--hardware", metavar="KEY", help="only this hardware fingerprint key")
    e.add_argument("--kernel", help="only this kernel")
    e.set_defaults(func=run_export)

    i = dsub.add_parser("import", help="add best configs from an export file (faster ones win)")
    add_db_argument(i)
    i.add_argument("file", help="a file written by 'tritune db export'")
    add_json_argument(i)
    i.set_defaults(func=run_import)

    m = dsub.add_parser("merge", help="copy another database's trials and best configs into this one")
    add_db_argument(m)
    m.add_argument("other", help="the database file to merge from (read-only)")
    add_json_argument(m)
    m.set_defaults(func=run_merge)

    pr = dsub.add_parser(
        "promote", help="fill the package's built-in table from committed GPU runs",
        description="Read every recorded GPU landscape under the given run folders and write the fastest "
        "verified config per hardware, kernel, kernel source and shape bucket into the package's built-in table "
        "(tritune_root/data/builtin_tuned.json in a source checkout; commit it). The table is rebuilt from the runs "
        "(--merge keeps its rows). Interpreter recordings are never promoted.",
        epilog="example: tritune db promote data/gpu_runs")
    pr.add_argument("runs", nargs="*", default=["data/gpu_runs"], metavar="RUN",
                    help="GPU run folders or landscape files (default: data/gpu_runs)")
    pr.add_argument("--output", "-o", metavar="FILE", help="write this table instead of the package's")
    pr.add_argument("--merge", action="store_true", help="keep the table's rows (a faster recording replaces one)")
    add_json_argument(pr)
    pr.set_defaults(func=run_promote)

    b = dsub.add_parser("best", help="list the best configs")
    add_db_argument(b)
    b.add_argument("--kernel", help="only this kernel")
    add_json_argument(b)
    b.set_defaults(func=run_best)


def _open(args: argparse.Namespace, *, must_exist: bool = True):
    from tritune.db import TuningDB, default_db_path

    path = Path(args.db) if args.db else default_db_path()
    if must_exist and not path.exists():
        raise CLIError(f"database {path} does not exist; run 'tritune tune' first or pass --db PATH")
    return TuningDB(path)


def run_stats(args: argparse.Namespace) -> int:
    with _open(args) as db:
        stats = db.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"database {stats['path']} (schema v{stats['schema_version']})")
    print(f"{stats['trials']} trials ({', '.join(f'{k}: {v}' for k, v in stats['trials_by_status'].items()) or 'none'}), "
          f"{stats['best_configs']} best configs, {stats['hardware']} hardware fingerprints")
    if stats["per_hardware_kernel"]:
        print_table([(r["hardware"], r["kernel"], r["buckets"], r["trials"], r["ok"]) for r in stats["per_hardware_kernel"]],
                    ("hardware", "kernel", "buckets", "trials", "ok"))
    return 0


def run_export(args: argparse.Namespace) -> int:
    with _open(args) as db:
        data = db.export_best(hardware=args.hardware, kernel=args.kernel)
    text = json.dumps(data, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"exported {len(data['rows'])} configs to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def run_import(args: argparse.Namespace) -> int:
    try:
        data = json.loads(Path(args.file).read_text())
    except json.JSONDecodeError as exc:
        raise CLIError(f"{args.file} is not JSON ({exc}); expected a file from 'tritune db export'") from None
    with _open(args, must_exist=False) as db:
        result = db.import_best(data, source=f"import:{Path(args.file).name}")
    print(json.dumps(result) if args.json else f"imported {result['rows']} rows, {result['changed']} added or improved")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    with _open(args, must_exist=False) as db:
        if Path(args.other).resolve() == db.path.resolve():
            raise CLIError("cannot merge a database into itself")
        result = db.merge(args.other)
    print(json.dumps(result) if args.json else
          f"merged {result['trials_added']} trials, {result['best_changed']} best configs added or improved")
    return 0


def run_best(args: argparse.Namespace) -> int:
    with _open(args) as db:
        rows = db.best(kernel=args.kernel)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    print_table([(r.hardware, r.kernel, r.bucket, ",".join(f"{k}={v}" for k, v in r.config.items()), r.time_ms,
                  "gpu" if r.real_timing else "cpu (not a GPU time)") for r in rows],
                ("hardware", "kernel", "bucket", "config", "time_ms", "timing"))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from tritune._builtin_table import promote_runs

    try:
        report = promote_runs(args.runs, args.output, merge=args.merge)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps({"table": str(report.table), "rows": report.rows, "changed": report.changed,
                          "landscapes": report.landscapes,
                          "skipped": [{"file": f, "why": why} for f, why in report.skipped]}, indent=2))
        return 0
    print(f"wrote {report.table}: {report.rows} rows from {report.landscapes} GPU landscapes "
          f"({report.changed} added or changed)")
    for f, why in report.skipped:
        print(f"  skipped {f}: {why}")
    return 0
