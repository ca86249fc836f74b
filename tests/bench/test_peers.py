"""bench/peers.py and the MLServer and KServe runtimes' shared part, without their venvs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import harness, peers
from bench.systems.onnx_classifier import OnnxClassifier
from service.app import create_app
from service.contract.preprocessing import features_to_tensor, pixels_to_tensor, spec_from_dict
from service.settings import Settings
from tests.helpers import MODELS, ROOT
from training.datasets import load


def _v2_outputs(response) -> dict[str, dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {out["name"]: out for out in response.get_json()["outputs"]}


@pytest.mark.parametrize("name", ["fashion-mnist", "circles"])
def test_peer_runtime_answers_what_the_service_v2_route_answers(name):
    folder = MODELS / name / "1"
    meta = json.loads((folder / "metadata.json").read_text())
    to_tensor = pixels_to_tensor if name == "fashion-mnist" else features_to_tensor
    batch = to_tensor(load(name).x_test[:16], spec_from_dict(meta["preprocessing"]))
    client = create_app(Settings.from_env({}, model_repository=MODELS)).test_client()
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(batch.shape),
                "data": batch.ravel().tolist(),
            }
        ]
    }
    theirs = _v2_outputs(client.post(f"/v2/models/{name}/versions/1/infer", json=body))

    ours = OnnxClassifier(folder).predict(batch)

    assert [o[0] for o in ours] == list(theirs)  # logits, probabilities, label
    for out_name, datatype, shape, values in ours:
        expected = theirs[out_name]
        assert (datatype, shape) == (expected["datatype"], expected["shape"]), out_name
        if datatype == "FP32":
            assert values.dtype == np.float32
            np.testing.assert_array_equal(values.ravel(), np.float32(expected["data"]))
        else:
            assert values.tolist() == expected["data"]
    probabilities = ours[1][3]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    if "temperature" in meta["output"]:  # the fitted temperature is applied, as the service does
        plain = np.exp(ours[0][3] - ours[0][3].max(axis=1, keepdims=True))
        assert not np.allclose(probabilities, plain / plain.sum(axis=1, keepdims=True))


def test_peers_get_the_v2_json_workload_and_a_circles_probe(tmp_path):
    bodies = harness.payloads()
    catalogue = harness.systems(8800, bodies, tmp_path / "metrics")
    for name in ("mlserver", "kserve"):
        system = catalogue[name]
        assert set(system.routes) == {"fashion-v2-json", "probe"}, name
        assert system.routes["fashion-v2-json"][:3] == (
            "/v2/models/fashion-mnist/infer",
            "application/json",
            bodies["v2-json"],
        )
        assert "circles" not in system.routes  # the circles workload is native JSON
        path, _, probe, _ = system.routes["probe"]
        assert path == "/v2/models/circles/infer"
        (tensor,) = json.loads(probe)["inputs"]
        assert tensor["shape"] == [1, 2]
        assert tensor["data"] == json.loads(bodies["vector"])["instances"][0]
        assert system.ready_path == "/v2/health/ready"
        assert str(peers.VENVS[name]) in system.command[0]
    mlserver = catalogue["mlserver"].env
    assert mlserver["MLSERVER_PARALLEL_WORKERS"] == str(harness.WORKERS)
    assert mlserver["MLSERVER_HTTP_PORT"] == "8800"
    assert len({mlserver[f"MLSERVER_{k}_PORT"] for k in ("HTTP", "GRPC", "METRICS")}) == 3
    assert mlserver["MLSERVER_METRICS_DIR"] == str(tmp_path / "metrics")
    command = catalogue["kserve"].command
    assert command[command.index("--workers") + 1] == str(harness.WORKERS)
    assert command[command.index("--http_port") + 1] == "8800"


@pytest.mark.parametrize("name", ["fashion-mnist", "circles"])
def test_mlserver_model_settings_name_the_runtime_and_the_version_folder(name):
    folder = ROOT / "bench" / "systems" / "mlserver" / name
    settings = json.loads((folder / "model-settings.json").read_text())
    assert settings["name"] == name
    assert settings["implementation"] == "bench.systems.mlserver_runtime.OnnxClassifierRuntime"
    # MLServer resolves a relative uri against the model-settings.json folder.
    assert (folder / settings["parameters"]["uri"]).resolve() == MODELS / name / "1"
    assert settings["parameters"]["version"] == "1"


def test_peer_venv_is_made_once_per_set_of_pins(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(peers.VENVS, "kserve", tmp_path / "venv")
    monkeypatch.setattr(peers.subprocess, "run", lambda args, check: calls.append(args))
    (tmp_path / "venv").mkdir()
    peers.ensure_venv("kserve")
    assert calls[0][1:] == ["-m", "venv", str(tmp_path / "venv")]
    assert calls[1][1:4] == ["install", "--quiet", "kserve==0.21.*"]
    peers.ensure_venv("kserve")
    assert len(calls) == 2  # the marker matches: nothing to do
    monkeypatch.setitem(peers.REQUIREMENTS, "kserve", ["kserve==0.22.*"])
    peers.ensure_venv("kserve")
    assert len(calls) == 4
