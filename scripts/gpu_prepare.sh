#!/usr/bin/env bash
# Prepare a GPU run of the suite from a machine without a GPU (run from the repository root).
#
# The project's GPU machine has Python 3.12 with torch, triton and transformers, but no optuna or
# sqlite-utils and no network. This script puts wheels for those (../shared/gpu/fetch-wheels.sh)
# and a wheel of tritune itself into ./.whl (ignored by git), then prints the one command to run
# there with `.whl` carried along. Everything the suite writes goes under $OUT.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
fetch=${FETCH_WHEELS:-../shared/gpu/fetch-wheels.sh}
if [ -x "$fetch" ] || [ -f "$fetch" ]; then
  bash "$fetch" >/dev/null
else
  echo "no $fetch: put optuna/sqlite-utils wheels for Python 3.12 into .whl yourself" >&2
fi
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -f .whl/tritune-*.whl
# The wheel is built without network, so by a Python that has setuptools' bdist_wheel: the one
# in $PYTHON, an active virtualenv, ./.venv (the README's commands make it), else python3.
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then py="$VIRTUAL_ENV/bin/python"
  elif [ -x .venv/bin/python ]; then py=.venv/bin/python
  else py=python3; fi
fi
if ! "$py" -m pip wheel -q --no-deps --no-build-isolation -w .whl . ; then
  echo "could not build the tritune wheel with $py: run this from the virtualenv of the README's test command (or set PYTHON)" >&2
  exit 1
fi
ls -la .whl
# vLLM's Triton unified_attention (the serving benchmark's baseline) is not on the GPU machine:
# a folder of its module files taken from the vllm wheel travels with the call when it is here
# (VLLM_TRITON_DIR, default .vllm-triton: triton_unified_attention.py, or a vllm/ tree of files).
vllm_dir=${VLLM_TRITON_DIR:-.vllm-triton}
if [ ! -d "$vllm_dir" ]; then  # take it out of the vllm wheel (a download; nothing of vLLM is committed)
  PYTHON="$py" bash scripts/vllm_triton_extract.sh "$vllm_dir" >&2 \
    || echo "scripts/vllm_triton_extract.sh failed: no $vllm_dir" >&2
fi
carry='[".whl"]'
vllm_arg=''
if [ -d "$vllm_dir" ]; then
  grep -qx "/$vllm_dir/" .git/info/exclude 2>/dev/null || echo "/$vllm_dir/" >> .git/info/exclude
  carry="[\".whl\", \"$vllm_dir\"]"
  vllm_arg=" --vllm-path \$R/$vllm_dir"
else
  echo "no $vllm_dir folder: the serving benchmark will skip vLLM's unified_attention (and say so)" >&2
fi
printf '\nRun on the GPU machine (carry: %s):\n\n' "$carry"
printf '%s%s\n' 'python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && R=$PWD && cd /tmp && python3 -m tritune.bench.gpu_suite --out /tmp/tritune-suite --budget-s 540 --continue-from $R/data/gpu_runs/* --pack $OUT/suite.tar.gz' "$vllm_arg"
cat <<'CMD'

The same command again, while the machine is still warm, continues where the first stopped
(/tmp/tritune-suite survives between calls on one machine; $OUT does not); --continue-from makes
a new machine extend the landscapes committed under data/gpu_runs/ for the same card. Unpack the
returned suite.tar.gz into data/gpu_runs/DATE-CARD/ here and commit it.
CMD
