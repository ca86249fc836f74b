"""Users' own Keras models, imported and served by real gunicorn: the service's single
softmax/sigmoid reproduces ``model.predict`` (1e-5 on features, 1e-4 on images)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.e2e.conftest import call, running_server
from tests.helpers import image_bytes
from tests.training.test_import import features_model, rgb_model
from training.cli import main


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Four models of different heads, imported into one repository and served."""
    work = tmp_path_factory.mktemp("imported")
    repo = work / "repo"
    models = {
        "softmax": (features_model("softmax"), "softmax.keras", []),
        "sigmoid": (features_model("sigmoid"), "sigmoid.h5", []),
        "custom": (features_model("custom"), "custom.keras", []),
        "rgb": (rgb_model(), "rgb.keras", ["--scale", "1", "--classes", "cat,dog,bird"]),
    }
    for name, (model, filename, extra) in models.items():
        model.save(work / filename)
        args = ["import", str(work / filename), "--name", name, "--repository", str(repo)]
        assert main([*args, *extra]) == 0
    with running_server(work, model_repository=str(repo), default_model="softmax") as server:
        yield server.url, {name: model for name, (model, _, _) in models.items()}


def _served(url: str, name: str, body: bytes, ctype: str) -> np.ndarray:
    status, _, answer = call("POST", f"{url}/models/{name}/predict", body, ctype)
    assert status == 200, answer
    _, _, model = call("GET", f"{url}/models/{name}")
    classes = model["versions"][0]["classes"]  # probabilities come best first: reorder
    return np.array([[p["probabilities"][c] for c in classes] for p in answer["predictions"]])


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "custom"])
def test_feature_models_match_keras(imported, name):
    url, models = imported
    x = np.random.default_rng(11).normal(0, 2, (16, 4)).astype(np.float32)
    expected = models[name].predict(x, verbose=0).astype(np.float64)
    if expected.shape[1] == 1:
        expected = np.concatenate([1 - expected, expected], axis=1)
    body = json.dumps({"instances": x.tolist()}).encode()
    served = _served(url, name, body, "application/json")
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_rgb_upload_matches_keras_on_raw_pixels(imported):
    url, models = imported
    pixels = np.random.default_rng(12).integers(0, 256, (12, 10, 3)).astype(np.uint8)
    served = _served(url, "rgb", image_bytes(pixels), "image/png")
    expected = models["rgb"].predict(pixels[None].astype(np.float32), verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_probabilities_model_has_no_logits_to_give(imported):
    url, _ = imported
    body = json.dumps({"instances": [[0.0, 1.0, 2.0, 3.0]], "logits": True}).encode()
    status, _, answer = call("POST", f"{url}/models/custom/predict", body, "application/json")
    assert status == 422
    assert "outputs probabilities itself" in answer["error"]["message"]
    status, _, meta = call("GET", f"{url}/v2/models/custom")
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]


def test_v2_features_of_an_imported_model(imported):
    url, models = imported
    x = np.random.default_rng(13).normal(0, 1, (3, 4)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}
        ],
        "outputs": [{"name": "probabilities"}],
    }
    status, _, answer = call(
        "POST", f"{url}/v2/models/softmax/infer", json.dumps(body).encode(), "application/json"
    )
    assert status == 200, answer
    probs = np.array(answer["outputs"][0]["data"]).reshape(3, 3)
    np.testing.assert_allclose(probs, models["softmax"].predict(x, verbose=0), atol=1e-5)
