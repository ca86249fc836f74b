#!/usr/bin/env bash
# Start the service under gunicorn on 127.0.0.1:8000 with ./models (installs what it needs).
# Every setting is a SERVING_* environment variable (see docs/settings.md), e.g.
#   SERVING_BIND=0.0.0.0:8080 SERVING_WORKERS=4 bash scripts/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh ""
exec .venv/bin/gunicorn -c gunicorn.conf.py "$@"
