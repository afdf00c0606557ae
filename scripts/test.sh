#!/usr/bin/env bash
# The test command: installs everything, checks lint, format, types and import layers, then runs the
# whole suite (servers start inside the tests). scripts/check.sh alone runs the static checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
scripts/check.sh
# --durations: the slowest tests in every log, so a CI run shows where its time went
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@"
