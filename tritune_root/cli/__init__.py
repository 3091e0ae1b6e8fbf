"""The ``tritune`` command line: a thin layer over the library.

Each command lives in its own module exposing ``register(subparsers)``; the module's parser sets
``func`` to the function that runs it. Errors users can fix (bad shapes, unknown kernels, unusable
database files) print one line and exit 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tritune import __version__

# Module names under tritune.cli, in the order `tritune --help` lists them.
COMMANDS = ("tune", "query", "db", "bench_search", "cost_model", "advisor")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritune",
        description="Autotune Triton attention kernels on this machine's GPU (or the Triton interpreter on CPU), "
        "store the results in a tuning database, and query them.",
        epilog="Run 'tritune COMMAND --help' for the options of each command. "
        "The database defaults to $TRITUNE_DB or ~/.cache/tritune/tuned.db.",
    )
    parser.add_argument("--version", action="version", version=f"tritune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the tuner and runtime decide")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tritune.cli._{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tritune.cli._{name}":
                raise
            continue  # a command whose module has not landed yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="tritune: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from tritune.db import DatabaseError

    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, DatabaseError, FileNotFoundError) as exc:
        print(f"tritune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tritune: interrupted", file=sys.stderr)
        return 130


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", default=None,
                        help="tuning database file (default: $TRITUNE_DB or ~/.cache/tritune/tuned.db)")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def parse_shape_args(kernel: str, items: Sequence[str]) -> object:
    """``--shape key=value ...`` (each item may hold several comma-separated pairs) -> spec."""
    from tritune.search_space import spec_type

    flat = [part for item in items for part in item.replace(" ", ",").split(",") if part]
    if not flat:
        raise CLIError("--shape is required, e.g. --shape B=1 Hq=32 Hkv=8 seq=2048 D=128")
    return spec_type(kernel).parse(flat)


def print_table(rows: Sequence[Sequence[object]], header: Sequence[str], file=None) -> None:
    """A plain aligned text table (no dependency, copy-paste friendly)."""
    file = file or sys.stdout
    cells = [[str(c) for c in header]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=file)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=file)


def _cell(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.4g}"
    return str(c)
