#!/bin/sh
# Create a virtual environment holding the service and its serving dependencies only
# (no TensorFlow, Keras or tf2onnx). Run by the Dockerfile's build stage, and by the tests
# in a fresh virtual environment, from the directory that holds pyproject.toml.
#
#   docker/install.sh VENV_DIR gpu|cpu
#
# gpu: onnxruntime-gpu (CUDA 13 + cuDNN 9 provider, falls back to CPU).
# cpu: the same dependencies with onnxruntime's CPU-only wheel (same module, ~10x smaller).
set -eu
venv="$1"
variant="$2"
python="${VENV_PYTHON:-python3}"

case "$variant" in
  gpu|cpu) ;;
  *) echo "usage: $0 VENV_DIR gpu|cpu" >&2; exit 2 ;;
esac

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --quiet --upgrade "pip>=24"
# The requirements are pyproject.toml's own, with the runtime wheel chosen per variant.
"$venv/bin/python" - "$variant" > "$venv/requirements.txt" <<'PY'
import sys
import tomllib

with open("pyproject.toml", "rb") as fh:
    dependencies = tomllib.load(fh)["project"]["dependencies"]
for requirement in dependencies:
    if sys.argv[1] == "cpu" and requirement.startswith("onnxruntime-gpu"):
        requirement = requirement.replace("onnxruntime-gpu", "onnxruntime", 1)
    print(requirement)
PY
"$venv/bin/python" -m pip install --no-cache-dir --quiet -r "$venv/requirements.txt"
"$venv/bin/python" -m pip install --no-cache-dir --quiet --no-deps .
"$venv/bin/python" -c "import service.app, onnxruntime; print('serving environment ready: onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
