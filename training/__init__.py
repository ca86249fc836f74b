"""Offline training: fit Keras classifiers that output logits, export them to ONNX, and
publish them into the model repository (``models/<name>/<version>/``)."""

import os

# onnxruntime's telemetry (its parity checks run sessions): off, as in service/__init__.py.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
