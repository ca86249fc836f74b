"""The service never imports TensorFlow, Keras or tf2onnx; shared modules stay light too."""

import json
import subprocess
import sys

SHARED = ["service.preprocessing", "service.postprocessing", "service.metadata"]
TRAINING_ONLY = ["tensorflow", "keras", "tf2onnx"]


def _loaded_after(code: str, candidates: list[str]) -> list[str]:
    probe = (
        code
        + f"\nimport json, sys\nprint(json.dumps([m for m in {candidates!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_shared_modules_import_without_heavy_dependencies():
    code = "".join(f"import {m}\n" for m in SHARED)
    assert _loaded_after(code, [*TRAINING_ONLY, "flask", "onnxruntime"]) == []


def test_the_whole_app_serving_requests_never_loads_tensorflow():
    code = (
        "from service.app import create_app\n"
        "client = create_app().test_client()\n"
        "r = client.post('/predict?model=circles', json={'instance': [0, 0]})\n"
        "assert r.status_code == 200\n"
        "assert client.get('/models').status_code == 200\n"
    )
    assert _loaded_after(code, [*TRAINING_ONLY, "tensorboard", "sklearn"]) == []
