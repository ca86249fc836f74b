"""TensorFlow Serving's REST API under /v1, with plain HTTP requests as TF Serving clients send."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.helpers import image_bytes


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_model_status(client):
    r = client.get("/v1/models/circles")
    assert r.get_json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get("/v1/models/circles/versions/1").get_json() == r.get_json()
    r = client.get("/v1/models/nope")
    assert (r.status_code, r.get_json()) == (404, {"error": "model 'nope' not found"})
    assert client.get("/v1/models/circles/versions/2").status_code == 404


def test_failed_version_status(scratch_repo):
    from service.app import create_app
    from service.settings import Settings

    onnx = scratch_repo / "circles" / "1" / "model.onnx"
    onnx.write_bytes(b"broken")
    client = create_app(
        Settings.from_env({}, model_repository=scratch_repo, default_model="blobs")
    ).test_client()
    (status,) = client.get("/v1/models/circles").get_json()["model_version_status"]
    assert status["state"] == "END"
    assert status["status"]["error_code"] == "UNKNOWN"
    assert "sha256" in status["status"]["error_message"]


def test_metadata_signature(client):
    body = client.get("/v1/models/fashion-mnist/metadata").get_json()
    assert body["model_spec"] == {"name": "fashion-mnist", "signature_name": "", "version": "2"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    dims = signature["inputs"]["input"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "28", "28", "1"]
    assert signature["inputs"]["input"]["dtype"] == "DT_FLOAT"
    out = signature["outputs"]["probabilities"]["tensor_shape"]["dim"]
    assert [d["size"] for d in out] == ["-1", "10"]
    assert client.get("/v1/models/fashion-mnist/versions/2/metadata").get_json() == body


def test_row_and_columnar_formats_in_model_units(client, fashion):
    x = (fashion["images"][:3] / 255.0).reshape(3, 28, 28, 1)
    expected = fashion["probabilities"][:3]
    row = client.post("/v1/models/fashion-mnist:predict", json={"instances": x.tolist()})
    assert row.status_code == 200
    np.testing.assert_allclose(row.get_json()["predictions"], expected, atol=1e-6)
    body = {"signature_name": "serving_default", "inputs": x.tolist()}
    columnar = client.post("/v1/models/fashion-mnist/versions/2:predict", json=body)
    np.testing.assert_allclose(columnar.get_json()["outputs"], expected, atol=1e-6)
    named = client.post("/v1/models/fashion-mnist:predict", json={"inputs": {"input": x.tolist()}})
    assert named.get_json() == columnar.get_json()
    named_rows = client.post(
        "/v1/models/fashion-mnist:predict", json={"instances": [{"input": v} for v in x.tolist()]}
    )
    assert named_rows.get_json() == row.get_json()


def test_b64_image_instances(client, fashion):
    pngs = [image_bytes(fashion["images"][i]) for i in range(2)]
    r = client.post("/v1/models/fashion-mnist:predict", json={"instances": [_b64(p) for p in pngs]})
    assert r.status_code == 200
    got = np.array(r.get_json()["predictions"])
    assert got.argmax(axis=1).tolist() == np.argmax(fashion["logits"][:2], axis=1).tolist()
    native = client.post(
        "/predict?model=fashion-mnist", data=pngs[0], content_type="image/png"
    ).get_json()["predictions"][0]
    np.testing.assert_allclose(
        got[0], [native["probabilities"][c] for c in fashion["classes"]], atol=1e-9
    )
    named = client.post(
        "/v1/models/fashion-mnist:predict", json={"instances": [{"image": _b64(p)} for p in pngs]}
    )
    assert named.get_json() == r.get_json()


def test_classify_examples_by_feature_name(client):
    r = client.post(
        "/v1/models/circles:classify",
        json={"examples": [{"x1": 0.0, "x2": 0.05}, {"x1": [0.99], "x2": [0.1]}]},
    )
    assert r.status_code == 200
    first, second = r.get_json()["result"]
    assert [label for label, _ in first] == ["outer", "inner"]  # class order
    assert first[1][1] > 0.99
    assert second[0][1] > 0.99
    assert sum(score for _, score in first) == pytest.approx(1.0)
    context = client.post(
        "/v1/models/circles:classify", json={"context": {"x2": 0.05}, "examples": [{"x1": 0.0}]}
    )
    assert context.get_json()["result"][0] == first


def test_classify_images(client, fashion):
    png = image_bytes(fashion["images"][0])
    r = client.post("/v1/models/fashion-mnist:classify", json={"examples": [{"image": _b64(png)}]})
    (pairs,) = r.get_json()["result"]
    assert [label for label, _ in pairs] == fashion["classes"]
    assert max(pairs, key=lambda pair: pair[1])[0] == "Ankle boot"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (":predict", {"instances": [[0, 0]], "inputs": [[0, 0]]}, "exactly one of 'instances'"),
        (":predict", {}, "exactly one of 'instances'"),
        (":predict", {"instances": [[0, 0], [1]]}, "ragged"),
        (":predict", {"instances": [0, 0]}, "has shape [2]; the model takes [-1, 2]"),
        (":predict", {"instances": [[0, "a"]]}, 'instances[0][1] must be a number, got "a"'),
        (":predict", {"instances": []}, "must be a non-empty list"),
        (":predict", {"instances": [[0, 0]], "colour": 1}, "unknown key(s) ['colour']"),
        (":predict", {"instances": [[0, 0]], "signature_name": "other"}, "'other' not found"),
        (":predict", {"inputs": {"x": [[0, 0]]}}, "unknown input 'x'"),
        (":predict", {"instances": [{"b64": "aGk="}]}, "takes feature vectors, not b64 images"),
        (":predict", {"instances": [[1e39, 0]]}, "finite"),
        (
            ":predict",
            {"instances": [{"input": [0, 0]}, {"other": [0, 0]}]},
            "every instance must name the same one input",
        ),
        (":classify", {"examples": [{"x1": 0}]}, "examples[0]: feature 'x2' is missing"),
        (":classify", {"examples": [{"x1": 0, "x2": 0, "x3": 1}]}, "unknown feature 'x3'"),
        (":classify", {"examples": [{"x1": "a", "x2": 0}]}, "examples[0]: feature 'x1' must be a"),
        (":classify", {"examples": []}, "'examples' must be a non-empty list"),
        (":regress", {"examples": [{"x1": 0, "x2": 0}]}, "is a classifier"),
    ],
)
def test_malformed_requests_are_400s(client, path, body, message):
    r = client.post("/v1/models/circles" + path, json=body)
    assert r.status_code == 400, r.get_json()
    assert set(r.get_json()) == {"error"}
    assert message in r.get_json()["error"]


def test_malformed_json_and_unknown_models(client):
    r = client.post("/v1/models/circles:predict", data=b"{", content_type="application/json")
    assert r.status_code == 400
    assert "malformed JSON" in r.get_json()["error"]
    r = client.post("/v1/models/nope:predict", json={"instances": [[0, 0]]})
    assert (r.status_code, r.get_json()) == (404, {"error": "model 'nope' not found"})
    r = client.post("/v1/models/circles/versions/4:predict", json={"instances": [[0, 0]]})
    assert r.status_code == 404
    r = client.post("/v1/models/fashion-mnist:predict", json={"instances": [_b64(b"nope")]})
    assert r.status_code == 400
    assert "instances[0] is not an image" in r.get_json()["error"]


def test_an_image_input_only_for_image_models_and_deep_json_is_a_400(client):
    r = client.post("/v1/models/circles:predict", json={"inputs": {"image": [[0, 0]]}})
    assert (r.status_code, r.get_json()) == (
        400,
        {
            "error": "unknown input 'image'; model 'circles' takes 'input', or its features "
            "by name (x1, x2)"
        },
    )
    for path in ("/v1/models/circles:predict", "/v1/models/circles:classify"):
        r = client.post(path, data=b"[" * 200_000, content_type="application/json")
        assert r.status_code == 400
        assert r.get_json() == {"error": "the JSON is nested too deeply"}
