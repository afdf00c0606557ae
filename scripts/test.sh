#!/usr/bin/env bash
# The test command: installs everything, then runs the whole suite (servers start inside the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
