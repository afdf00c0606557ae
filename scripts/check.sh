#!/usr/bin/env bash
# Static checks (configured in pyproject.toml): ruff lint, ruff format, mypy, import-linter layers.
# Uses the tools on PATH (scripts/test.sh puts the project's .venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/python:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
echo "== ruff check";         ruff check python operator tests
echo "== ruff format --check"; ruff format --check python operator tests
echo "== mypy";               mypy
echo "== lint-imports";       lint-imports
