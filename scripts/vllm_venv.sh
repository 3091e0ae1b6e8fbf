#!/usr/bin/env bash
# Make the side virtualenv the vLLM backend tests run in (tests/vllm_backend): ./.venv-vllm by default.
#
# vllm 0.33 pins torch 2.14, so it never joins the main virtualenv. Its vllm.v1.attention modules
# (backend base classes, registry, TRITON_ATTN, unified_attention) import next to the CPU torch
# 2.13 when the wheel is installed with --no-deps plus the non-torch packages those imports
# reach (vllm._C, its compiled ops, is then missing; those modules tolerate that). The list
# below is that set, found by importing them in a fresh virtualenv until nothing was missing;
# the constraints keep every install off another torch or Triton. tritune goes in editable, so
# its vllm.general_plugins entry point is registered there.
#
# usage: scripts/vllm_venv.sh [DIR]          then: DIR/bin/python -m pytest tests/vllm_backend
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.venv-vllm}
py=${PYTHON:-python3}
VLLM=${VLLM_VERSION:-0.33.0}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf 'torch==2.13.0\ntriton==3.9.0\ntransformers>=5.16.1,<5.21\n' > "$constraints"
start=$(date +%s)
if [ ! -x "$dir/bin/python" ]; then
  "$py" -m venv "$dir"
fi
pip=("$dir/bin/python" -m pip install -q -c "$constraints")
"${pip[@]}" torch==2.13.0 triton==3.9.0
"$dir/bin/python" -m pip install -q --no-deps "vllm==$VLLM"
# What the attention modules import (module -> package): packaging regex numpy psutil zmq(pyzmq)
# requests cbor2 aiohttp openai_harmony openai PIL(pillow) pybase64 cachetools msgspec cloudpickle
# uvloop cpuinfo(py-cpuinfo) prometheus_client xgrammar fastapi partial_json_parser llguidance
# transformers (vllm's pin), and through them the rest of vllm.config.
"${pip[@]}" packaging regex numpy psutil pyzmq requests cbor2 aiohttp openai-harmony openai pillow pybase64 \
  cachetools msgspec cloudpickle uvloop py-cpuinfo prometheus_client "xgrammar==0.2.8" fastapi partial-json-parser \
  "llguidance>=1.7,<1.8" "transformers>=5.16.1,<5.21" pydantic pyyaml sentencepiece tokenizers einops blake3 \
  tiktoken "lark==1.2.2" gguf watchfiles python-json-logger setproctitle pyarrow
# tritune itself (editable: the entry point) and its test runner; its other dependencies resolve
# under the same constraints.
"${pip[@]}" -e . pytest hypothesis
"$dir/bin/python" - <<'PY'
import os
os.environ.setdefault("TRITON_INTERPRET", "1")
import vllm.v1.attention.backend, vllm.v1.attention.backends.registry  # noqa: E401
import vllm.v1.attention.backends.triton_attn, vllm.v1.attention.ops.triton_unified_attention  # noqa: E401
import tritune.integrations.vllm.backend  # noqa: F401
import torch, vllm  # noqa: E401
print(f"vllm {vllm.__version__} attention modules import next to torch {torch.__version__}")
PY
echo "$dir ready in $(( $(date +%s) - start )) s"
