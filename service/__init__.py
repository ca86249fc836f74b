"""Inference service for the model repository (numpy + onnxruntime; never TensorFlow).

Kept import-light: ``service.preprocessing``, ``service.postprocessing`` and
``service.metadata`` are shared with ``training/`` and must import without Flask.
"""
