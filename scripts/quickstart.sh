#!/usr/bin/env bash
# The quickstart, end to end on one machine (a few minutes on 2 CPU cores):
#   install -> three small real-English sources (demo-data) -> token shards with the GPT-2 tokenizer
#   (prepare) -> train a small GPT-2 on their 50/30/20 mixture with a local Ray (trainkit run)
#   -> print where the checkpoint, metrics and loss curve are.
# Re-running it skips what is done; an interrupted training run resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
trainkit validate --explain jobs/quickstart.yaml
for source in manuals web edu; do
  if [ ! -f "demo-data/$source/data/train-00000-of-00002.parquet" ]; then
    trainkit demo-data demo-data
    break
  fi
done
for source in manuals web edu; do
  [ -f "demo-data/shards/$source/index.json" ] || trainkit prepare "demo-data/$source" "demo-data/shards/$source"
done
trainkit run jobs/quickstart.yaml
