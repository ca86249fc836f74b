"""onnxruntime's telemetry stays off: a served request writes nothing under $HOME.

onnxruntime 1.29 and later, on Linux too, upload usage events to Microsoft and keep a
device id and an event cache in ~/.cache/Microsoft/DeveloperTools/.onnxruntime. Each probe
runs in a fresh process with its own empty HOME and none of the CI variables (onnxruntime
stays quiet by itself under CI, which would hide a regression here). Taking the service's
default out makes these fail: onnxruntime then writes its files (and tries to upload).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

_SERVE = (
    "from service.app import create_app\n"
    "client = create_app().test_client()\n"
    "r = client.post('/predict?model=circles', json={'instance': [0.5, 0.5]})\n"
    "assert r.status_code == 200, r.get_json()\n"
)
_TRAINING_PARITY = (
    "import training, onnxruntime as ort, numpy as np\n"
    "s = ort.InferenceSession('models/circles/1/model.onnx', providers=['CPUExecutionProvider'])\n"
    "s.run(None, {s.get_inputs()[0].name: np.zeros((1, 2), np.float32)})\n"
)


def _files_written(code: str, home: Path, **env: str) -> list[str]:
    """What the probe left under ``home``, as paths relative to it."""
    clean = {"PATH": os.environ["PATH"], "HOME": str(home), **env}
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


@pytest.mark.parametrize("code", [_SERVE, _TRAINING_PARITY], ids=["service", "training"])
def test_no_device_id_or_event_cache_is_written(tmp_path, code):
    assert _files_written(code, tmp_path) == []


def test_an_operator_can_turn_it_back_on():
    """ORT_DISABLE_TELEMETRY=0 is left as the operator set it (not run here: onnxruntime would
    then try to upload). Without the service's default the test above fails: onnxruntime
    writes its device id and event cache into the empty HOME."""
    code = "import os, service; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    for given, seen in (("0", "0"), ("", "1"), (None, "1")):
        env = {"PATH": os.environ["PATH"]}
        if given is not None:
            env["ORT_DISABLE_TELEMETRY"] = given
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.strip() == seen
