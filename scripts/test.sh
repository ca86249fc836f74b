#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, lints, builds the docs
# site (strict: a broken link fails), runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "train,dev"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet  # the docs site, into site/
exec .venv/bin/python -m pytest "$@"
