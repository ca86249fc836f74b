"""Offline training: fit Keras classifiers that output logits, export them to ONNX, and
publish them into the model repository (``models/<name>/<version>/``)."""

import service  # noqa: F401  (first: it turns onnxruntime's telemetry off before it loads)
