#!/usr/bin/env bash
# Mutation testing of the pure modules (tests/tools/mutation.toml): the score per module and the
# surviving mutants. Not part of scripts/test.sh (it takes several minutes). Arguments: see --help.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${PYTHON:-}" ] || [ -x .venv/bin/python ] || scripts/install.sh
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD/python:$PWD/operator:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" tests/tools/mutation.py "$@"
