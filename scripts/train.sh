#!/usr/bin/env bash
# Train a model and publish it as the next version in ./models (installs what it needs).
#   scripts/train.sh circles            # one dataset, its default config
#   scripts/train.sh fashion-mnist --epochs 16
#   scripts/train.sh all                # every committed model, as in docs/models.md
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "train,dev"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [[ "${1:-}" == "all" ]]; then
  shift
  for dataset in circles blobs digits fashion-mnist; do
    .venv/bin/python -m training train "$dataset" "$@"
  done
else
  exec .venv/bin/python -m training train "${@:-circles}"
fi
