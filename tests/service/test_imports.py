"""The shared service modules stay light: no TensorFlow, Keras, tf2onnx (nor Flask/ORT)."""

import json
import subprocess
import sys

SHARED = ["service.preprocessing", "service.postprocessing", "service.metadata"]
FORBIDDEN = ["tensorflow", "keras", "tf2onnx", "flask", "onnxruntime"]


def test_shared_modules_import_without_heavy_dependencies():
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in SHARED)
        + f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
