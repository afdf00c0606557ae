#!/usr/bin/env bash
# Create .venv and install trainkit with its test tools. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch is pinned in the same pip call: alone, ray[train] or lm-eval[hf] would pull a multi-GB CUDA torch.
.venv/bin/pip install -q -e '.[test]' 'torch==2.13.0'
# litdata (a benchmark peer) declares torchvision, whose PyPI build breaks importing transformers next
# to the CPU torch: install litdata without it (litdata itself never imports torchvision for our use).
.venv/bin/pip install -q --no-deps 'litdata==0.2.76' 'lightning-utilities' 'tifffile' 'obstore'
