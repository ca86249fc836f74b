"""The same inputs through the three protocols give the same probabilities and labels."""

from __future__ import annotations

import base64

import numpy as np

from service.protocols.v2_tensors import bytes_tensor
from tests.helpers import image_bytes
from tests.service.protocols.test_v2 import _binary_request, _outputs


def _native(client, model, **kwargs):
    body = client.post(f"/predict?model={model}", **kwargs).get_json()
    return list(body["predictions"])


def _in_class_order(predictions, classes):
    return np.array([[p["probabilities"][c] for c in classes] for p in predictions])


def _v2(client, model, inputs):
    r = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.get_json()
    return _outputs(r)


def _tfs(client, model, instances):
    r = client.post(f"/v1/models/{model}:predict", json={"instances": instances})
    assert r.status_code == 200, r.get_json()
    return np.array(r.get_json()["predictions"])


def test_feature_vectors(client):
    for model, classes in (
        ("circles", ["outer", "inner"]),
        ("blobs", ["blob_0", "blob_1", "blob_2", "blob_3"]),
    ):
        x = [[0.1, -0.2], [0.95, 0.3], [-5.0, 2.0], [4.8, -2.1]]
        native = _native(client, model, json={"instances": x})
        v2 = _v2(client, model, [{"name": "input", "datatype": "FP32", "shape": [4, 2], "data": x}])
        tfs = _tfs(client, model, x)
        expected = _in_class_order(native, classes)
        np.testing.assert_allclose(v2["probabilities"], expected, atol=1e-6)
        np.testing.assert_allclose(tfs, expected, atol=1e-12)
        assert v2["label"] == [p["label"] for p in native]
        classify = client.post(
            f"/v1/models/{model}:classify", json={"examples": [{"x1": a, "x2": b} for a, b in x]}
        )
        scores = [[s for _, s in row] for row in classify.get_json()["result"]]
        np.testing.assert_allclose(scores, expected, atol=1e-12)


def test_encoded_images(client, fashion):
    pngs = [image_bytes(fashion["images"][i]) for i in range(4)]
    classes = fashion["classes"]
    native = [_native(client, "fashion-mnist", data=p, content_type="image/png")[0] for p in pngs]
    expected = _in_class_order(native, classes)
    raw = bytes_tensor(pngs)
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        raw,
    )
    r = client.post("/v2/models/fashion-mnist/infer", data=body, headers=headers)
    v2 = _outputs(r)
    b64 = [{"b64": base64.b64encode(p).decode()} for p in pngs]
    tfs = _tfs(client, "fashion-mnist", b64)
    np.testing.assert_allclose(v2["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(tfs, expected, atol=1e-12)
    assert v2["label"] == [p["label"] for p in native]


def test_pixels_in_raw_units_and_tensors_in_model_units(client, fashion):
    raw = fashion["images"][:4]
    scaled = (raw.astype(np.float32) / 255.0).reshape(4, 28, 28, 1)
    native = _native(client, "fashion-mnist", json={"instances": raw.tolist()})
    expected = _in_class_order(native, fashion["classes"])
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": [4, 28, 28, 1],
        "data": scaled.ravel().tolist(),
    }
    v2 = _v2(client, "fashion-mnist", [tensor])
    tfs = _tfs(client, "fashion-mnist", scaled.tolist())
    np.testing.assert_allclose(v2["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(tfs, expected, atol=1e-6)
    np.testing.assert_allclose(v2["logits"], fashion["logits"][:4], atol=1e-5)
