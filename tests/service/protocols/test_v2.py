"""The Open Inference Protocol (V2) under /v2, in process: every endpoint, both encodings of
tensors both ways, classification, image bytes, and every malformed request as a 400."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from service.protocols.v2_tensors import bytes_tensor
from tests.helpers import image_bytes

HEADER = "Inference-Header-Content-Length"


def _binary_request(header: dict, *parts: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(parts), {HEADER: str(len(head))}


def _split(r) -> tuple[dict, bytes]:
    length = r.headers.get(HEADER)
    if length is None:
        return r.get_json(), b""
    return json.loads(r.data[: int(length)]), r.data[int(length) :]


def _outputs(r) -> dict[str, np.ndarray | list]:
    """Every output of a response, decoded from JSON data or the binary section."""
    header, binary = _split(r)
    found, offset = {}, 0
    for out in header["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = out["data"]
            found[out["name"]] = (
                np.array(data, np.float32).reshape(out["shape"])
                if out["datatype"] == "FP32"
                else data
            )
            continue
        raw, offset = binary[offset : offset + size], offset + size
        if out["datatype"] == "FP32":
            found[out["name"]] = np.frombuffer(raw, "<f4").reshape(out["shape"])
        else:
            items, pos = [], 0
            while pos < len(raw):
                (n,) = struct.unpack_from("<I", raw, pos)
                items.append(raw[pos + 4 : pos + 4 + n].decode())
                pos += 4 + n
            found[out["name"]] = items
    assert offset == len(binary)
    return found


def _fashion_tensor(fashion, n=4) -> np.ndarray:
    return (fashion["images"][:n].astype(np.float32) / 255.0).reshape(n, 28, 28, 1)


# --- server, health, metadata ----------------------------------------------------------------


def test_server_metadata_and_health(client):
    body = client.get("/v2").get_json()
    assert body["name"] == "keras-classifier-serving"
    assert {"binary_tensor_data", "classification", "statistics", "model_repository"} <= set(
        body["extensions"]
    )
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200


def test_model_metadata(client):
    body = client.get("/v2/models/fashion-mnist").get_json()
    assert body["name"] == "fashion-mnist"
    assert body["versions"] == ["1", "2"]
    assert body["platform"] == "onnxruntime_onnx"
    assert body["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 28, 28, 1]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert body["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    assert body["parameters"]["classes"][9] == "Ankle boot"
    circles = client.get("/v2/models/circles/versions/1").get_json()
    assert circles["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
    assert circles["outputs"][0]["shape"] == [-1, 1]  # one binary logit
    assert circles["outputs"][1]["shape"] == [-1, 2]
    r = client.get("/v2/models/nope")
    assert (r.status_code, r.get_json()) == (404, {"error": "model 'nope' not found"})
    r = client.get("/v2/models/circles/versions/7")
    assert (r.status_code, r.get_json()) == (404, {"error": "model 'circles' has no version 7"})
    assert client.get("/v2/models/circles/versions/0").status_code == 404
    assert client.get("/v2/models/circles/versions/x1").status_code == 404


def test_model_ready_and_config(client):
    assert client.get("/v2/models/circles/ready").get_json() == {"name": "circles", "ready": True}
    assert client.get("/v2/models/circles/versions/1/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404
    config = client.get("/v2/models/fashion-mnist/config").get_json()
    assert config["max_batch_size"] == 4096
    assert config["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [28, 28, 1]}
    assert config["output"][2] == {"name": "label", "data_type": "TYPE_STRING", "dims": [1]}
    assert "dynamic_batching" not in config  # off by default
    from service.app import create_app
    from service.settings import Settings

    batched = create_app(Settings.from_env({}, batching=True)).test_client()
    config = batched.get("/v2/models/fashion-mnist/config").get_json()
    assert config["dynamic_batching"] == {
        "max_queue_delay_microseconds": 0,
        "preferred_batch_size": [32],
    }


def test_failed_model_in_index_ready_and_infer(scratch_repo):
    from service.app import create_app
    from service.settings import Settings

    onnx = scratch_repo / "circles" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")  # checksum mismatch
    client = create_app(
        Settings.from_env({}, model_repository=scratch_repo, default_model="blobs")
    ).test_client()
    index = client.post("/v2/repository/index").get_json()
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("blobs", "1", "READY"),
        ("circles", "1", "UNAVAILABLE"),
    ]
    assert "sha256" in index[1]["reason"]
    assert client.post("/v2/repository/index", json={"ready": True}).get_json() == index[:1]
    assert client.post("/v2/repository/index", data=b"[").status_code == 400
    r = client.get("/v2/models/circles/ready")
    assert r.status_code == 400
    assert r.get_json()["ready"] is False
    r = client.post("/v2/models/circles/infer", json={"inputs": []})
    assert r.status_code == 503
    assert "failed to load" in r.get_json()["error"]
    assert client.get("/v2/models/circles").status_code == 503


# --- infer -----------------------------------------------------------------------------------


def test_json_tensor_in_json_out_matches_the_model(client, fashion):
    x = _fashion_tensor(fashion)
    r = client.post(
        "/v2/models/fashion-mnist/infer",
        json={
            "id": "req-7",
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ],
        },
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    header = r.get_json()
    assert (header["id"], header["model_name"], header["model_version"]) == (
        "req-7",
        "fashion-mnist",
        "2",
    )
    outputs = _outputs(r)
    np.testing.assert_allclose(outputs["logits"], fashion["logits"][:4], atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], fashion["probabilities"][:4], atol=1e-6)
    expected = [fashion["classes"][i] for i in np.argmax(fashion["logits"][:4], axis=1)]
    assert outputs["label"] == expected


def test_binary_tensor_in_binary_out(client, fashion):
    x = _fashion_tensor(fashion, 3)
    raw = x.astype("<f4").tobytes()
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [3, 28, 28, 1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        raw,
    )
    r = client.post("/v2/models/fashion-mnist/versions/2/infer", data=body, headers=headers)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    header, _ = _split(r)
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]][:2] == [120, 120]
    outputs = _outputs(r)
    np.testing.assert_allclose(outputs["logits"], fashion["logits"][:3], atol=1e-5)
    assert outputs["label"] == [
        fashion["classes"][i] for i in np.argmax(fashion["logits"][:3], axis=1)
    ]


def test_outputs_chosen_one_by_one_and_mixed(client):
    r = client.post(
        "/v2/models/circles/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [2, 2],
                    "data": [[0.0, 0.05], [0.99, 0.1]],
                }
            ],
            "outputs": [
                {"name": "label"},
                {"name": "probabilities", "parameters": {"binary_data": True}},
            ],
        },
    )
    header, _ = _split(r)
    assert [o["name"] for o in header["outputs"]] == ["label", "probabilities"]
    outputs = _outputs(r)
    assert outputs["label"] == ["inner", "outer"]
    assert outputs["probabilities"].shape == (2, 2)  # [1 - p, p] for the single logit
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, atol=1e-6)
    assert outputs["probabilities"][0, 1] > 0.99


def test_classification_extension(client, fashion):
    x = _fashion_tensor(fashion, 2)
    r = client.post(
        "/v2/models/fashion-mnist/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [2, 28, 28, 1],
                    "data": x.ravel().tolist(),
                }
            ],
            "outputs": [
                {"name": "probabilities", "parameters": {"classification": 3}},
                {"name": "logits", "parameters": {"classification": 2, "binary_data": True}},
            ],
        },
    )
    header, _ = _split(r)
    assert header["outputs"][0]["shape"] == [2, 3]
    assert header["outputs"][0]["datatype"] == "BYTES"
    outputs = _outputs(r)
    probs = fashion["probabilities"][:2]
    rows = [outputs["probabilities"][:3], outputs["probabilities"][3:]]
    for row, p in zip(rows, probs, strict=True):
        order = np.argsort(-p)[:3]
        assert [int(s.split(":")[1]) for s in row] == order.tolist()
        assert [s.split(":", 2)[2] for s in row] == [fashion["classes"][i] for i in order]
        np.testing.assert_allclose([float(s.split(":")[0]) for s in row], p[order], rtol=1e-6)
    best_logit = outputs["logits"][0].split(":")
    assert float(best_logit[0]) == pytest.approx(fashion["logits"][0].max(), abs=1e-5)
    r = client.post(
        "/v2/models/circles/infer",
        json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0, 0]}],
            "outputs": [{"name": "label", "parameters": {"classification": 5}}],
        },
    )
    (scores,) = [_outputs(r)["label"]]
    assert len(scores) == 2  # k is capped at the number of classes
    assert scores[0].endswith(":1:inner")


def test_image_bytes_input(client, fashion):
    pngs = [image_bytes(fashion["images"][i]) for i in range(3)]
    raw = bytes_tensor(pngs)
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [3],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities"}],
        },
        raw,
    )
    r = client.post("/v2/models/fashion-mnist/infer", data=body, headers=headers)
    assert r.status_code == 200, r.get_json()
    native = client.post(
        "/predict?model=fashion-mnist", data=pngs[0], content_type="image/png"
    ).get_json()["predictions"][0]
    got = _outputs(r)["probabilities"]
    assert got.argmax(axis=1).tolist() == np.argmax(fashion["logits"][:3], axis=1).tolist()
    expected = [native["probabilities"][c] for c in fashion["classes"]]
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    as_json = client.post(
        "/v2/models/fashion-mnist/infer",
        json={  # base64 in JSON, [N, 1]
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [3, 1],
                    "data": [base64.b64encode(p).decode() for p in pngs],
                }
            ],
            "outputs": [{"name": "probabilities"}],
        },
    )
    np.testing.assert_allclose(_outputs(as_json)["probabilities"], got, atol=1e-7)


def _infer(client, model="fashion-mnist", **request):
    return client.post(f"/v2/models/{model}/infer", json=request)


_GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"inputs": [{**_GOOD, "name": "x"}]}, "unknown input 'x'; model 'circles' takes 'input'"),
        ({"inputs": [{**_GOOD, "datatype": "FP64"}]}, "datatype FP64; the model takes FP32"),
        ({"inputs": [{**_GOOD, "datatype": "FLOAT"}]}, "datatype 'FLOAT'; expected one of"),
        ({"inputs": [{**_GOOD, "shape": [1, 3]}]}, "has 2 elements in 'data'; its shape [1, 3]"),
        (
            {"inputs": [{**_GOOD, "shape": [2, 1], "data": [0, 1]}]},
            "input 'input' has shape [2, 1]; the model takes [-1, 2]",
        ),
        ({"inputs": [{**_GOOD, "shape": [1, -1]}]}, "'shape' of at most 8 non-negative"),
        ({"inputs": [{**_GOOD, "shape": [1] * 9}]}, "'shape' of at most 8 non-negative"),
        ({"inputs": [{**_GOOD, "shape": [10**18] * 8}]}, "below 2**31"),
        ({"inputs": [{**_GOOD, "shape": [2**31 - 1] * 8}]}, "has 2 elements in 'data'"),
        ({"inputs": [{**_GOOD, "data": [0.1, "x"]}]}, 'data[1] must be a number, got "x"'),
        ({"inputs": [{**_GOOD, "data": [[0.1], 0.2]}]}, "ragged"),
        ({"inputs": [{**_GOOD, "data": [1e39, 0]}]}, "must be finite"),
        ({"inputs": [_GOOD, _GOOD]}, "input 'input' is given twice"),
        ({"inputs": [_GOOD, {**_GOOD, "name": "b"}]}, "takes one input, 'input'; got 2"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [{k: v for k, v in _GOOD.items() if k != "data"}]}, "neither 'data' nor"),
        ({"inputs": [_GOOD], "outputs": [{"name": "scores"}]}, "unknown output 'scores'"),
        ({"inputs": [_GOOD], "outputs": [{"name": "label"}, {"name": "label"}]}, "requested twice"),
        (
            {
                "inputs": [_GOOD],
                "outputs": [{"name": "label", "parameters": {"classification": 0}}],
            },
            "classification must be a positive integer",
        ),
        (
            {
                "inputs": [_GOOD],
                "outputs": [{"name": "logits", "parameters": {"classification": 1}}],
            },
            "classification of 'logits' needs one logit per class",
        ),
        (
            {"inputs": [_GOOD], "parameters": {"binary_data_output": "yes"}},
            "binary_data_output must be true or false",
        ),
        ({"inputs": [_GOOD], "id": 5}, "'id' must be a string"),
        (
            {
                "inputs": [
                    {**_GOOD, "name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}
                ]
            },
            "unknown input 'image'",
        ),
    ],
)
def test_malformed_requests_are_400s(client, request_body, message):
    r = _infer(client, "circles", **request_body)
    assert r.status_code == 400, r.get_json()
    (text,) = r.get_json().values()
    assert message in text, text


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[1, 2]", {}, "must be a JSON object"),
        (b"{}", {HEADER: "10"}, "is 10 bytes but the body has only 2"),
        (b"{}", {HEADER: "x"}, "'x' is not a number of bytes"),
        (b"", {}, "not valid JSON"),
    ],
)
def test_bodies_that_do_not_parse(client, body, headers, message):
    r = client.post("/v2/models/circles/infer", data=body, headers=headers)
    assert r.status_code == 400
    assert message in r.get_json()["error"]


def _binary_case(size_declared: int, raw: bytes, shape=(1, 2), datatype="FP32"):
    return _binary_request(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": datatype,
                    "shape": list(shape),
                    "parameters": {"binary_data_size": size_declared},
                }
            ]
        },
        raw,
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (_binary_case(8, np.zeros(3, "<f4").tobytes()), "binary bytes that no input"),
        (_binary_case(12, np.zeros(3, "<f4").tobytes()), "does not match shape [1, 2] of FP32"),
        (_binary_case(16, np.zeros(2, "<f4").tobytes()), "goes beyond the 8 binary bytes"),
        (
            _binary_case(8, np.zeros(2, "<f4").tobytes() + b"", datatype="FP16"),
            "does not match shape [1, 2] of FP16",
        ),
    ],
)
def test_binary_sizes_that_do_not_match(client, case, message):
    body, headers = case
    r = client.post("/v2/models/circles/infer", data=body, headers=headers)
    assert r.status_code == 400
    assert message in r.get_json()["error"]


def test_bad_image_bytes(client, fashion):
    raw = bytes_tensor([b"not an image"])
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        raw,
    )
    r = client.post("/v2/models/fashion-mnist/infer", data=body, headers=headers)
    assert (r.status_code, r.get_json()) == (
        400,
        {
            "error": "image[0] is not an image Pillow can read "
            "(PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or HEIC)"
        },
    )
    cut = bytes_tensor([image_bytes(fashion["images"][0])])[:-5]
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(cut)},
                }
            ]
        },
        cut,
    )
    r = client.post("/v2/models/fashion-mnist/infer", data=body, headers=headers)
    assert "runs past binary_data_size" in r.get_json()["error"]
    r = _infer(
        client, inputs=[{"name": "image", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]
    )
    assert "must have shape [N] (or [N, 1])" in r.get_json()["error"]
    r = _infer(client, inputs=[{"name": "image", "datatype": "FP32", "shape": [1], "data": [1]}])
    assert "must be BYTES" in r.get_json()["error"]


def test_statistics_count_requests_and_instances(settings):
    from service.app import create_app

    client = create_app(settings).test_client()

    def stats():
        (entry,) = client.get("/v2/models/circles/versions/1/stats").get_json()["model_stats"]
        return entry

    before = stats()
    for n in (1, 3):
        r = _infer(client, "circles", inputs=[{**_GOOD, "shape": [n, 2], "data": [0.1] * 2 * n}])
        assert r.status_code == 200
    assert _infer(client, "circles", inputs=[{**_GOOD, "data": [1e39, 0]}]).status_code == 400
    after = stats()
    success = (
        after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    )
    assert success == 2
    assert (
        after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
    )
    assert after["inference_count"] - before["inference_count"] == 4
    assert after["execution_count"] - before["execution_count"] == 2
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= before["last_inference"]
    everything = client.get("/v2/models/stats").get_json()["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} == {
        ("blobs", "1"),
        ("circles", "1"),
        ("digits", "1"),
        ("fashion-mnist", "1"),
        ("fashion-mnist", "2"),
    }
    assert len(client.get("/v2/models/circles/stats").get_json()["model_stats"]) == 1
    assert client.get("/v2/models/nope/stats").status_code == 404


def test_header_lengths_beyond_reason_are_400s(client):
    for value in ("9" * 5000, "1" * 19, "-5", "0x10"):
        r = client.post("/v2/models/circles/infer", data=b"{}", headers={HEADER: value})
        assert r.status_code == 400, value
        assert "is not a number of bytes" in r.get_json()["error"]
