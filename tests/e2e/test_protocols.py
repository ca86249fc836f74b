"""The three protocols on a real gunicorn (2 workers): tritonclient.http drives the Open
Inference Protocol, plain HTTP drives TF Serving's REST API, and they agree with the native
API and with onnxruntime in process."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import call, running_server
from tests.helpers import image_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


def _scaled(fashion, n):
    return (fashion["images"][:n].astype(np.float32) / 255.0).reshape(n, 28, 28, 1)


def test_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("fashion-mnist")
    assert triton.is_model_ready("circles", "1")
    assert not triton.is_model_ready("nope")
    server = triton.get_server_metadata()
    assert server["name"] == "keras-classifier-serving"
    assert {"binary_tensor_data", "classification", "statistics"} <= set(server["extensions"])
    meta = triton.get_model_metadata("fashion-mnist")
    assert [i["name"] for i in meta["inputs"]] == ["input", "image"]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities", "label"]
    assert triton.get_model_config("fashion-mnist")["max_batch_size"] > 0
    index = triton.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} == {
        ("blobs", "READY"),
        ("circles", "READY"),
        ("digits", "READY"),
        ("fashion-mnist", "READY"),
    }


def test_binary_tensors_both_ways(triton, fashion):
    x = _scaled(fashion, 8)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = triton.infer("fashion-mnist", [tensor])  # no outputs named: all, in binary
    np.testing.assert_allclose(result.as_numpy("logits"), fashion["logits"][:8], atol=1e-5)
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), fashion["probabilities"][:8], atol=1e-6
    )
    labels = [fashion["classes"][i] for i in np.argmax(fashion["logits"][:8], axis=1)]
    assert [v.decode() for v in result.as_numpy("label")] == labels
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("fashion-mnist", "2")


def test_json_tensors_both_ways_with_a_version_and_an_id(triton, fashion):
    x = _scaled(fashion, 3)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
        httpclient.InferRequestedOutput("label", binary_data=False),
    ]
    result = triton.infer(
        "fashion-mnist", [tensor], model_version="2", outputs=outputs, request_id="e2e-1"
    )
    assert result.get_response()["id"] == "e2e-1"
    assert "data" in result.get_response()["outputs"][0]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), fashion["probabilities"][:3], atol=1e-6
    )
    assert result.as_numpy("logits") is None  # not asked for


def test_classification_extension(triton, fashion):
    x = _scaled(fashion, 2)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = [httpclient.InferRequestedOutput("probabilities", class_count=3)]
    scores = triton.infer("fashion-mnist", [tensor], outputs=outputs).as_numpy("probabilities")
    assert scores.shape == (2, 3)
    probs = fashion["probabilities"][:2]
    for row, p in zip(scores, probs, strict=True):
        value, index, label = row[0].decode().split(":", 2)
        assert int(index) == int(np.argmax(p))
        assert label == fashion["classes"][int(index)]
        assert float(value) == pytest.approx(p.max(), rel=1e-6)


def test_image_bytes_and_compression(triton, server, fashion):
    pngs = np.array([image_bytes(fashion["images"][i]) for i in range(16)], dtype=object)
    images = httpclient.InferInput("image", [16], "BYTES")
    images.set_data_from_numpy(pngs, binary_data=True)
    result = triton.infer(
        "fashion-mnist",
        [images],
        request_compression_algorithm="gzip",
        response_compression_algorithm="deflate",
    )
    got = result.as_numpy("probabilities")
    assert got.argmax(axis=1).tolist() == np.argmax(fashion["logits"][:16], axis=1).tolist()
    # The same exchange by hand: the response really was compressed (it is over 1 KiB).
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [16],
                    "data": [base64.b64encode(p).decode() for p in pngs],
                }
            ]
        }
    )
    request = urllib.request.Request(
        server + "/v2/models/fashion-mnist/infer",
        data=gzip.compress(body.encode()),
        method="POST",
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "deflate"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Encoding"] == "deflate"
        answer = json.loads(zlib.decompress(response.read()))
    probs = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(np.reshape(probs["data"], (16, 10)), got, atol=1e-7)


def test_errors_reach_the_client_as_4xx(triton, fashion):
    x = _scaled(fashion, 1)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as unknown:
        triton.infer("nope", [tensor])
    assert (unknown.value.status(), unknown.value.message()) == ("404", "model 'nope' not found")
    with pytest.raises(InferenceServerException) as version:
        triton.infer("fashion-mnist", [tensor], model_version="9")
    assert version.value.status() == "404"
    wrong = httpclient.InferInput("input", [1, 784], "FP32")
    wrong.set_data_from_numpy(x.reshape(1, 784))
    with pytest.raises(InferenceServerException) as shape:
        triton.infer("fashion-mnist", [wrong])
    assert shape.value.status() == "400"
    assert "has shape [1, 784]; the model takes [-1, 28, 28, 1]" in shape.value.message()
    unknown_output = [httpclient.InferRequestedOutput("scores")]
    with pytest.raises(InferenceServerException) as output:
        triton.infer("fashion-mnist", [tensor], outputs=unknown_output)
    assert output.value.status() == "400"
    assert triton.infer("fashion-mnist", [tensor]).as_numpy("label").shape == (1,)


def test_tf_serving_rest_over_http(server, fashion):
    x = _scaled(fashion, 2)
    status, _, body = call(
        "POST",
        server + "/v1/models/fashion-mnist:predict",
        json.dumps({"instances": x.tolist()}).encode(),
        "application/json",
    )
    assert status == 200
    np.testing.assert_allclose(body["predictions"], fashion["probabilities"][:2], atol=1e-6)
    b64 = base64.b64encode(image_bytes(fashion["images"][0])).decode()
    status, _, body = call(
        "POST",
        server + "/v1/models/fashion-mnist:classify",
        json.dumps({"examples": [{"image": {"b64": b64}}]}).encode(),
        "application/json",
    )
    assert max(body["result"][0], key=lambda pair: pair[1])[0] == "Ankle boot"
    status, _, body = call("GET", server + "/v1/models/fashion-mnist")
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    status, _, body = call(
        "POST",
        server + "/v1/models/fashion-mnist:predict",
        b'{"instances": [1], "inputs": [1]}',
        "application/json",
    )
    assert (status, set(body)) == (400, {"error"})


def test_statistics_are_summed_over_workers(tmp_path):
    """A fresh server: N requests over both workers; statistics report exactly N."""
    with running_server(tmp_path) as server:
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [2, 2],
                        "data": [0.1, -0.2, 0.95, 0.3],
                    }
                ]
            }
        ).encode()
        url = server.url + "/v2/models/circles/infer"

        def send(_):
            return call("POST", url, body, "application/json")[0]

        rounds = 0
        while True:
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(send, range(40))) == {200}
            rounds += 1
            pids = {
                line["pid"]
                for line in server.log_lines()
                if line.get("path", "").endswith("/infer")
            }
            if len(pids) == 2 or rounds == 10:
                break
        assert len(pids) == 2  # both workers answered: the statistics below are sums
        infinite = body.replace(b"0.95", b"1e39")  # decodes, then fails in the dataplane
        assert call("POST", url, infinite, "application/json")[0] == 400
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        (stats,) = client.get_inference_statistics("circles", "1")["model_stats"]
        client.close()
        requests = 40 * rounds
        assert stats["inference_stats"]["success"]["count"] == requests
        assert stats["inference_stats"]["fail"]["count"] == 1
        assert stats["inference_count"] == 2 * requests
        assert 0 < stats["execution_count"] <= requests  # batching may merge requests
        assert stats["inference_stats"]["compute_infer"]["count"] == stats["execution_count"]
        assert stats["inference_stats"]["compute_input"]["count"] == requests
        assert (
            stats["inference_stats"]["success"]["ns"]
            > stats["inference_stats"]["compute_infer"]["ns"]
            > 0
        )
        assert stats["last_inference"] > 0
