#!/usr/bin/env bash
# Take vLLM's Triton unified_attention out of the vllm wheel into ./.vllm-triton (ignored by git),
# the folder scripts/gpu_prepare.sh sends to the GPU machine for the serving benchmark's baseline
# (gpu_suite / varlen_bench --vllm-path .vllm-triton). Nothing of vLLM is committed.
#
# The whole vllm package cannot travel (a 336 MB wheel pinning another torch), and its kernel
# module imports a few dozen of vllm's pure-Python modules (envs, logger, platforms, triton_utils,
# kv_cache_interface ...). This script unpacks the wheel's .py files into a scratch folder,
# imports vllm.v1.attention.ops.triton_unified_attention (and, where they import, the cache write
# triton_reshape_and_cache_flash and vllm.platforms.cuda) with $PYTHON, a Python with torch and
# triton but without vllm's other requirements, as the GPU image is, and copies exactly the vllm
# modules those imports loaded, as a vllm/ tree, plus MANIFEST.txt (wheel, sha256, module list).
# On such a Python neither optional module imports (vllm.distributed needs psutil; the CUDA
# platform loads vllm's compiled extensions), so the tree holds unified_attention's 36 modules
# and bench/vllm_bench.py pins vLLM's platform to its generic one when it loads them.
#
# usage: scripts/vllm_triton_extract.sh [DEST]      (VLLM_WHEEL=path skips the download)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.vllm-triton}
version=${VLLM_VERSION:-0.33.0}
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
wheel=${VLLM_WHEEL:-}
if [ -z "$wheel" ]; then
  "$py" -m pip download -q --no-deps "vllm==$version" -d "$scratch/wheel"
  wheel=$(ls "$scratch"/wheel/vllm-*.whl)
fi
"$py" -m zipfile -e "$wheel" "$scratch/tree" >/dev/null 2>&1 || true
[ -d "$scratch/tree/vllm" ] || { echo "could not unpack $wheel" >&2; exit 1; }
# Built in the scratch folder and moved into place only when it imports: a failed run leaves no
# half folder for gpu_prepare.sh to send.
out="$scratch/out"
mkdir -p "$out"
TRITON_INTERPRET=1 PYTHONPATH="$scratch/tree" "$py" - "$scratch/tree" "$out" "$wheel" "$dest" <<'PY'
import hashlib, importlib, os, shutil, sys
tree, dest, wheel, label = sys.argv[1:5]
import vllm.v1.attention.ops.triton_unified_attention as ua  # noqa: F401
try:  # TRITON_ATTN's cache write: it reaches vllm.distributed (psutil, ...), absent on a bare image
    import vllm.v1.attention.ops.triton_reshape_and_cache_flash  # noqa: F401
except Exception as exc:  # noqa: BLE001
    print(f"note: triton_reshape_and_cache_flash left out ({type(exc).__name__}: {exc})", file=sys.stderr)
try:  # the GPU machine picks the CUDA platform at run time: take its modules too
    import vllm.platforms.cuda  # noqa: F401
except Exception as exc:  # noqa: BLE001
    print(f"note: vllm.platforms.cuda did not import here ({type(exc).__name__}: {exc})", file=sys.stderr)
files = set()
for name, mod in list(sys.modules.items()):
    path = getattr(mod, "__file__", None)
    if (name == "vllm" or name.startswith("vllm.")) and path and os.path.abspath(path).startswith(os.path.abspath(tree)):
        rel = os.path.relpath(path, tree)
        files.add(rel)
        parts = rel.split(os.sep)[:-1]  # every parent package's __init__.py
        for i in range(1, len(parts) + 1):
            init = os.path.join(*parts[:i], "__init__.py")
            if os.path.exists(os.path.join(tree, init)):
                files.add(init)
for rel in sorted(files):
    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
    shutil.copy2(os.path.join(tree, rel), os.path.join(dest, rel))
# The wheel's METADATA only (no entry points): vllm.triton_utils asks importlib.metadata for
# vllm's version, and a missing package there disables Triton (its kernels become placeholders).
for info in os.listdir(tree):
    if info.startswith("vllm-") and info.endswith(".dist-info"):
        os.makedirs(os.path.join(dest, info), exist_ok=True)
        shutil.copy2(os.path.join(tree, info, "METADATA"), os.path.join(dest, info, "METADATA"))
        files.add(os.path.join(info, "METADATA"))
digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
with open(os.path.join(dest, "MANIFEST.txt"), "w") as f:
    f.write(f"from {os.path.basename(wheel)} sha256 {digest}\n")
    f.write("import: vllm.v1.attention.ops.triton_unified_attention (unified_attention)\n")
    f.write("\n".join(sorted(files)) + "\n")
print(f"{label}: {len(files)} vllm module files from {os.path.basename(wheel)}")
PY
# The copy imports on its own (no scratch tree on the path), as it will on the GPU machine.
TRITON_INTERPRET=1 PYTHONPATH="$out" "$py" -c "from vllm.v1.attention.ops.triton_unified_attention import unified_attention" 2>/dev/null
rm -rf "$dest"
mv "$out" "$dest"
echo "unified_attention imports from $dest ($(du -sh "$dest" | cut -f1))"
