#!/usr/bin/env bash
# The quickstart: install, then validate and explain the quickstart run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
trainkit validate --explain jobs/quickstart.yaml
