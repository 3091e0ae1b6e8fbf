"""``tritune query``: which config the runtime would launch for a shape, and why."""

from __future__ import annotations

import argparse
import json

from . import add_db_argument, add_json_argument, parse_shape_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="show the config the runtime uses for a shape and which rule found it",
        description="Print the config tritune launches for one shape on this machine's hardware, and the rule "
        "that found it: exact (tuned for this shape bucket), nearest (closest tuned bucket), builtin-* (the "
        "package's table), cross-hardware (only with --cross-hardware) or default (nothing tuned).",
        epilog="examples:\n"
        "  tritune query --kernel flash_attention --shape B=1 Hq=32 Hkv=8 seq=2048 D=128 dtype=bf16 causal=1\n"
        "  tritune query --kernel varlen_attention --shape S=65 T=576 Sq=512 ctx=4096 Hq=32 Hkv=8 D=128 "
        "block_size=16 dtype=bf16   # 64 decode rows + a 512-token chunk",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kernel", required=True, help="kernel family: flash_attention, paged_attention or varlen_attention")
    p.add_argument("--shape", nargs="+", required=True, metavar="KEY=VALUE",
                   help="problem shape; flash_attention keys: B Hq Hkv Sq Skv (or seq) D dtype causal; "
                   "paged_attention keys: S Hq Hkv D context_len block_size dtype; varlen_attention (a serving step) "
                   "keys: S (sequences) T (new tokens in all) Sq (most new tokens of one sequence) ctx (most keys of "
                   "one sequence) Hq Hkv D block_size (page size, 0 = contiguous K/V) dtype kv_dtype (auto or fp8) "
                   "causal left right (window, -1 = unbounded) softcap alibi sinks (0/1)")
    p.add_argument("--hardware", default=None, metavar="NAME",
                   help="answer for a device from the spec table (e.g. H100) or 'cpu-interpreter' instead of this "
                   "machine's; combine with --triton-version to match a fingerprint exactly")
    p.add_argument("--triton-version", default=None, help="Triton version of the fingerprint given by --hardware")
    p.add_argument("--cross-hardware", action="store_true",
                   help="allow configs tuned on other hardware (re-validated for this one)")
    p.add_argument("--no-builtin", action="store_true", help="ignore the package's built-in tuned table")
    add_db_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tritune.runtime import Dispatcher
    from tritune.search_space import Hardware, detect

    spec = parse_shape_args(args.kernel, args.shape)
    if args.hardware is None:
        hardware = detect()
    elif args.hardware == "cpu-interpreter":
        hardware = Hardware.cpu_interpreter(args.triton_version)
    else:
        hardware = Hardware.from_spec(args.hardware, args.triton_version or "any")
    disp = Dispatcher(hardware, db_path=args.db, use_builtin=not args.no_builtin, cross_hardware=args.cross_hardware)
    sel = disp.lookup(spec)
    out = {
        "kernel": spec.kernel,
        "spec": spec.to_dict(),
        "bucket": spec.bucket().key,
        "hardware": hardware.key,
        "config": sel.config.to_dict(),
        "rule": sel.rule,
        "tuned_bucket": sel.tuned_bucket,
        "tuned_hardware": sel.tuned_hardware,
        "source": sel.source,
        "tuned_time_ms": sel.time_ms,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"kernel    {spec.kernel}")
    print(f"shape     {spec.describe()}")
    print(f"bucket    {out['bucket']}")
    print(f"hardware  {hardware.key}")
    print(f"config    {', '.join(f'{k}={v}' for k, v in out['config'].items())}")
    how = {
        "exact": "tuned for this shape bucket",
        "nearest": f"nearest tuned bucket {sel.tuned_bucket}",
        "builtin-exact": "package's built-in table, this bucket",
        "builtin-nearest": f"package's built-in table, nearest bucket {sel.tuned_bucket}",
        "cross-hardware": f"tuned on other hardware ({sel.tuned_hardware}), re-validated",
        "default": "nothing tuned: the safe default config",
    }[sel.rule]
    print(f"found by  {sel.rule} ({how})")
    if sel.time_ms is not None:
        print(f"tuned at  {sel.time_ms:.4g} ms ({sel.source})")
    return 0
