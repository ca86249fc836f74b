"""Offline training: fit Keras classifiers that output logits, export them to ONNX, and
publish them into the model repository (``models/<name>/<version>/``)."""
