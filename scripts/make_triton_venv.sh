#!/usr/bin/env bash
# Make the side virtualenv the AOT compile tier uses to compile with a second Triton: by default
# triton 3.6 (what the GPU image compiles with) in ./.venv-triton36 at the repository root, where
# tritune.kernels._compile.side_python() looks for it (or set TRITUNE_SIDE_TRITON to its python).
#
# The side virtualenv holds Triton only: its interpreter borrows torch and tritune from the
# interpreter that asks for a compile (its site-packages go behind the side Triton), so it must
# be the same Python minor version as that one: PYTHON (default python3) makes it.
#
# usage: scripts/make_triton_venv.sh [VERSION [DIR]]     e.g. scripts/make_triton_venv.sh 3.6
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.6}
dir=${2:-.venv-triton${version//./}}
py=${PYTHON:-python3}
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import triton, sys; sys.exit(not triton.__version__.startswith('$version.'))" 2>/dev/null; then
  echo "$dir already has triton $("$dir/bin/python" -c 'import triton; print(triton.__version__)')"
  exit 0
fi
"$py" -m venv "$dir"
"$dir/bin/python" -m pip install -q "triton==$version.*"
"$dir/bin/python" -c "import triton, sys; print(f'{sys.argv[1]}: triton {triton.__version__}, Python {sys.version.split()[0]}')" "$dir"
