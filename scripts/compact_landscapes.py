"""Copy Kernel Tuner cache files, keeping only what tritune reads (see data/kernel_tuner_cache)."""

import gzip
import json
import shutil
import sys
from pathlib import Path

KEEP = {"time", "compile_time", "verification_time", "benchmark_time", "framework_time"}


def main(src: str, dst: str) -> None:
    for path in sorted(Path(src).glob("*/*.json.gz")):
        data = json.load(gzip.open(path, "rt"))
        keys = set(data["tune_params_keys"])
        data["cache"] = {k: {f: v for f, v in e.items() if f in keys or f in KEEP} for k, e in data["cache"].items()}
        out = Path(dst) / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(out, "wt", compresslevel=9) as f:
            json.dump(data, f, separators=(",", ":"))
    for name in ("LICENSE", "CITATION.cff"):
        shutil.copy(Path(src) / name, Path(dst) / name)
    shutil.copytree(Path(src) / "spaces", Path(dst) / "spaces", dirs_exist_ok=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
