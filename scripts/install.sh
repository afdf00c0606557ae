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
# Real English text for `trainkit demo-data` (licenses: docs/data.md): three Debian doc packages unpacked
# into .trainkit/demo-text/root, not installed, so no root is needed once apt lists exist. Without apt,
# demo-data falls back to text that ships with Python.
if command -v apt-get >/dev/null && [ ! -d .trainkit/demo-text/root/usr/share/doc/python3.11 ]; then
  if [ "$(id -u)" = 0 ] && ! apt-cache show python3.11-doc >/dev/null 2>&1; then apt-get update -qq || true; fi
  ( mkdir -p .trainkit/demo-text/debs && cd .trainkit/demo-text/debs \
    && apt-get download -qq python3.11-doc r-doc-pdf debian-handbook 2>/dev/null \
    && for deb in *.deb; do dpkg-deb -x "$deb" ../root; done ) \
    || echo "warning: could not fetch Debian doc packages; trainkit demo-data will use Python's own docs" >&2
fi
# Debian's Chromium: the comparison report's test renders report.html in a real headless browser
# (tests/integration/test_compare_sweep.py; it skips, saying why, when no Chromium is found).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "warning: could not install chromium; the HTML report's browser test will be skipped" >&2
fi
