"""End to end: a real gunicorn process (2 workers) on a free loopback port, driven over HTTP."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.contract import metadata as contract
from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import features_to_tensor, spec_from_dict
from service.models.predictor import OnnxPredictor
from tests.e2e.conftest import call as _call
from tests.helpers import MODELS, image_bytes, multipart

pytestmark = pytest.mark.slow


def _post_json(base, path, payload):
    return _call("POST", base + path, json.dumps(payload).encode(), "application/json")


@pytest.fixture(scope="module")
def confident(fashion):
    """Indices of test images the model is sure about (a JPEG round trip cannot flip them)."""
    probs = fashion["probabilities"]
    return [int(i) for i in np.flatnonzero(probs.max(axis=1) > 0.95)[:12]]


def _labels(body):
    return [p["index"] for p in body["predictions"]]


def test_health_and_models(server):
    status, _, body = _call("GET", server + "/health/live")
    assert (status, body) == (200, {"status": "alive"})
    status, _, body = _call("GET", server + "/health/ready")
    assert status == 200
    assert body["models"] == {
        "blobs/1": "loaded",
        "circles/1": "loaded",
        "digits/1": "loaded",
        "fashion-mnist/1": "loaded",
        "fashion-mnist/2": "loaded",
    }
    status, _, body = _call("GET", server + "/models")
    assert status == 200
    assert {m["name"] for m in body["models"]} == {"blobs", "circles", "digits", "fashion-mnist"}
    assert all(
        v["provider"] == "CPUExecutionProvider" for m in body["models"] for v in m["versions"]
    )


def test_fashion_png_uploads_match_in_process_predictions(server, fashion):
    for i in range(16):
        status, headers, body = _call(
            "POST", server + "/predict", image_bytes(fashion["images"][i]), "image/png"
        )
        assert status == 200
        assert headers["X-Request-ID"] == body["request_id"]
        (p,) = body["predictions"]
        assert p["index"] == int(np.argmax(fashion["logits"][i]))
        assert p["label"] == fashion["classes"][p["index"]]
        expected = fashion["probabilities"][i : i + 1][0]
        got = [p["probabilities"][c] for c in fashion["classes"]]
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_fashion_jpeg_multipart_batch(server, fashion, confident):
    files = [
        ("file", f"{i}.jpg", image_bytes(fashion["images"][i], "JPEG", quality=95), "image/jpeg")
        for i in confident
    ]
    body, ctype = multipart({"model": "fashion-mnist"}, files)
    status, _, result = _call("POST", server + "/predict", body, ctype)
    assert status == 200
    assert _labels(result) == [int(np.argmax(fashion["logits"][i])) for i in confident]


def test_fashion_upscaled_rgb_and_inverted(server, fashion, confident):
    upscaled, inverted = [], []
    for i in confident:
        big = np.kron(fashion["images"][i], np.ones((5, 5), np.uint8))  # 140x140
        upscaled.append(np.repeat(big[:, :, None], 3, axis=2))  # RGB
        inverted.append(255 - big)  # dark garment on white paper
    expected = [int(np.argmax(fashion["logits"][i])) for i in confident]
    for images in (upscaled, inverted):
        payload = {"images": [base64.b64encode(image_bytes(im)).decode() for im in images]}
        status, _, body = _post_json(server, "/models/fashion-mnist/predict", payload)
        assert status == 200
        assert _labels(body) == expected


def _in_process(name, vectors):
    vdir = MODELS / name / "1"
    meta = contract.read(vdir)
    predictor = OnnxPredictor(vdir, meta, ["CPUExecutionProvider"])
    predictor.load()
    logits = predictor.predict(features_to_tensor(vectors, spec_from_dict(meta["preprocessing"])))
    return OutputSpec.from_dict(meta["output"]).probabilities(logits)


@pytest.mark.parametrize("name", ["circles", "blobs"])
def test_feature_vectors_match_in_process_predictions(server, name):
    from training.datasets import load

    ds = load(name)
    vectors = ds.x_test[:64].tolist()
    status, _, body = _post_json(server, f"/predict?model={name}", {"instances": vectors})
    assert status == 200
    assert body["model"]["name"] == name
    expected = _in_process(name, ds.x_test[:64])
    assert _labels(body) == np.argmax(expected, axis=1).tolist()
    accuracy = np.mean(np.array(_labels(body)) == ds.y_test[:64])
    assert accuracy >= 0.98


def test_bad_requests_get_4xx_and_the_workers_keep_serving(server):
    bad = [
        ("POST", "/predict", b"{oops", "application/json", 400),
        ("POST", "/predict", b"not an image", "image/png", 400),
        ("POST", "/predict?model=nope", b'{"instance": [1, 2]}', "application/json", 404),
        ("POST", "/predict", b"x", "text/csv", 415),
        ("POST", "/predict?model=circles", b'{"instance": [1, 2, 3]}', "application/json", 422),
    ]
    for method, path, body, ctype, expected in bad * 2:  # twice: both workers see them
        status, _, result = _call(method, server + path, body, ctype)
        assert status == expected, result
        assert set(result) == {"error", "request_id"}
    status, _, _ = _post_json(server, "/predict?model=circles", {"instance": [0, 0]})
    assert status == 200


def test_oversized_body_refused_from_its_headers(server):
    """413 comes back on the declared Content-Length, before the body is read."""
    import http.client

    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "image/png")
    connection.putheader("Content-Length", str(9 * 1024 * 1024))
    connection.endheaders()  # and send no body at all
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert "8,388,608 bytes" in body["error"]["message"]


def test_concurrent_requests_across_workers(server, fashion):
    png = image_bytes(fashion["images"][0])
    expected = int(np.argmax(fashion["logits"][0]))

    def one(_):
        return _call("POST", server + "/predict", png, "image/png")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(40)))
    assert all(status == 200 for status, _, _ in results)
    assert {body["predictions"][0]["index"] for _, _, body in results} == {expected}
    assert len({body["request_id"] for _, _, body in results}) == 40


def test_openapi_served(server):
    status, _, spec = _call("GET", server + "/openapi.json")
    assert status == 200
    assert "/predict" in spec["paths"]
