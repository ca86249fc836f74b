#!/usr/bin/env bash
# Make ./.venv with the project installed (editable) and, for training/tests, the
# Fashion-MNIST data from Debian. Idempotent and quick when nothing changed.
#   scripts/bootstrap.sh [EXTRAS]   e.g. "train,dev" (default) or "" for serving only
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1-train,dev}"
PYTHON="${PYTHON:-python3}"
VENV=".venv"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

# Reinstall only when pyproject.toml or the extras changed.
hash="$(sha256sum pyproject.toml | cut -c1-16)"
stamp="$VENV/.installed-$hash-${EXTRAS//,/_}"
# Serving needs only the base install, which any install of this pyproject.toml includes.
if [[ -z "$EXTRAS" ]] && compgen -G "$VENV/.installed-$hash-*" >/dev/null; then
  stamp="$(compgen -G "$VENV/.installed-$hash-*" | head -n1)"
fi
if [[ ! -f "$stamp" ]]; then
  spec="."
  [[ -n "$EXTRAS" ]] && spec=".[${EXTRAS}]"
  echo "bootstrap: pip install -e '$spec'"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# Debian packages the tests use as real components (installed only when missing):
# chromium renders /docs and the console, npm fetches axe-core for it, prometheus scrapes the service, promtool checks the alert rules,
# wrk drives the benchmark, curl runs the docs' examples.
if [[ "$EXTRAS" == *dev* ]]; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v npm >/dev/null || missing+=(npm)
  command -v curl >/dev/null || missing+=(curl)  # the docs' examples are run by the tests
  command -v slowhttptest >/dev/null || missing+=(slowhttptest)  # slow readers (tests/e2e/test_door.py)
  if ((${#missing[@]})); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      echo "bootstrap: installing Debian packages ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bootstrap: missing ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    fi
  fi
fi

# axe-core, injected by the console's browser tests (pinned in tests/browser/package-lock.json).
if [[ "$EXTRAS" == *dev* ]] && command -v npm >/dev/null \
    && [[ ! -f tests/browser/node_modules/axe-core/axe.min.js ]]; then
  echo "bootstrap: npm ci in tests/browser (axe-core)"
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

# Fashion-MNIST's IDX files (training and the committed-model tests need them).
if [[ "$EXTRAS" == *train* ]]; then
  FMNIST_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
  if [[ ! -f "$FMNIST_DIR/t10k-images-idx3-ubyte.gz" ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      echo "bootstrap: installing Debian package dataset-fashion-mnist"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
      echo "bootstrap: Fashion-MNIST missing in $FMNIST_DIR; run as root:" \
           "apt-get install dataset-fashion-mnist (or set FASHION_MNIST_DIR)" >&2
    fi
  fi
fi
