"""Inference service for the model repository (numpy + onnxruntime; never TensorFlow).

Kept import-light: ``service.contract.preprocessing``, ``service.contract.postprocessing`` and
``service.contract.metadata`` are shared with ``training/`` and must import without Flask.
"""

import os

# onnxruntime (1.29 and later, Linux too) sends usage telemetry to Microsoft and keeps a device
# id and an event cache under ~/.cache/Microsoft. A model server should not call out or write
# to $HOME on its own: off unless the operator sets ORT_DISABLE_TELEMETRY=0. onnxruntime reads
# the variable once, when it is imported, so whatever imports onnxruntime (the service,
# training, the bench, the tests, docker/install.sh) imports this package first.
if not os.environ.get("ORT_DISABLE_TELEMETRY"):
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
