"""The images cap and the decode time budget: checked in every protocol before the work."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from service.app import create_app
from service.inference import inputs
from service.protocols.v2_tensors import bytes_tensor
from tests.helpers import image_bytes, multipart

V2_HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def png(fashion) -> bytes:
    return image_bytes(fashion["images"][0])


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often the dataplane base64-decodes, opens and decodes an image."""
    counts = {"base64": 0, "open": 0, "decode": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(inputs, "decode_base64", counted("base64", inputs.decode_base64))
    monkeypatch.setattr(inputs, "open_image", counted("open", inputs.open_image))
    monkeypatch.setattr(inputs, "model_pixels", counted("decode", inputs.model_pixels))
    return counts


def _requests(png: bytes, n: int) -> dict[str, tuple[str, dict]]:
    """n images in each way a protocol carries them: (path, test-client keyword arguments)."""
    b64 = base64.b64encode(png).decode()
    body, content_type = multipart({}, [("file", f"{i}.png", png, "image/png") for i in range(n)])
    raw = bytes_tensor([png] * n)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [n],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    v2_json = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [n], "data": [b64] * n}]}
    return {
        "native images": ("/predict?model=fashion-mnist", {"json": {"images": [b64] * n}}),
        "native b64": ("/predict?model=fashion-mnist", {"json": {"instances": [{"b64": b64}] * n}}),
        "multipart": (
            "/predict?model=fashion-mnist",
            {"data": body, "content_type": content_type},
        ),
        "v2 json": ("/v2/models/fashion-mnist/infer", {"json": v2_json}),
        "v2 binary": (
            "/v2/models/fashion-mnist/infer",
            {"data": header + raw, "headers": {V2_HEADER: str(len(header))}},
        ),
        "tfserving predict": (
            "/v1/models/fashion-mnist:predict",
            {"json": {"instances": [{"b64": b64}] * n}},
        ),
        "tfserving classify": (
            "/v1/models/fashion-mnist:classify",
            {"json": {"examples": [{"image": {"b64": b64}}] * n}},
        ),
    }


def _message(r) -> str:
    error = r.get_json()["error"]
    return error if isinstance(error, str) else error["message"]


@pytest.mark.parametrize(
    "way",
    [
        "native images",
        "native b64",
        "multipart",
        "v2 json",
        "v2 binary",
        "tfserving predict",
        "tfserving classify",
    ],
)
def test_the_images_cap_holds_in_every_protocol_before_anything_is_decoded(
    settings, png, calls, way
):
    client = create_app(settings, max_images=2).test_client()
    path, request = _requests(png, 3)[way]
    r = client.post(path, **request)
    native = path.startswith("/predict")
    assert r.status_code == (422 if native else 400)
    assert _message(r) == (
        "a request of 3 images is above this model's limit of 2 images (SERVING_MAX_IMAGES)"
    )
    if native:
        assert r.get_json()["error"]["code"] == "batch_too_large"
        assert r.get_json()["error"]["details"] == {"images": 3, "max_images": 2}
    assert calls == {"base64": 0, "open": 0, "decode": 0}
    path, request = _requests(png, 2)[way]
    r = client.post(path, **request)
    assert r.status_code == 200, r.get_json()
    assert calls["open"] == calls["decode"] == 2


def test_pixel_arrays_are_not_images_and_one_raw_image_always_fits(settings, fashion, png):
    client = create_app(settings, max_images=1).test_client()
    b64 = base64.b64encode(png).decode()
    pixels = fashion["images"][1].tolist()
    r = client.post("/predict?model=fashion-mnist", json={"instances": [b64, pixels, pixels]})
    assert r.status_code == 200
    assert len(r.get_json()["predictions"]) == 3
    r = client.post("/predict?model=fashion-mnist", data=png, content_type="image/png")
    assert r.status_code == 200


def test_the_cap_per_model_and_the_multipart_parts_it_allows(settings, png):
    client = create_app(
        settings, max_images=4, limit_overrides='{"fashion-mnist": {"max_images": 1}}'
    ).test_client()
    b64 = base64.b64encode(png).decode()
    r = client.post("/predict?model=fashion-mnist", json={"images": [b64] * 2})
    assert r.get_json()["error"]["details"] == {"images": 2, "max_images": 1}
    digit = base64.b64encode(image_bytes(np.zeros((8, 8), np.uint8))).decode()
    r = client.post("/predict?model=digits", json={"images": [digit] * 4})
    assert r.status_code == 200
    # A multipart body is parsed before its model is known: the largest cap (4) and the five
    # option fields bound its parts.
    body, content_type = multipart({}, [("f", f"{i}.png", png, "image/png") for i in range(10)])
    r = client.post("/predict?model=digits", data=body, content_type=content_type)
    assert r.status_code == 413
    assert r.get_json()["error"] == {
        "code": "payload_too_large",
        "message": "the multipart body has more than 9 parts "
        "(4 images, SERVING_MAX_IMAGES, and 5 option fields)",
        "details": {"max_parts": 9},
    }


def test_the_default_cap_takes_the_benchs_batch_of_64(client, png, calls):
    b64 = base64.b64encode(png).decode()
    r = client.post("/predict?model=fashion-mnist", json={"images": [b64] * 64})
    assert r.status_code == 200
    assert len(r.get_json()["predictions"]) == 64
    r = client.post("/predict?model=fashion-mnist", json={"images": [b64] * 257})
    assert r.get_json()["error"]["details"] == {"images": 257, "max_images": 256}
    assert calls["open"] == 64


def test_the_decode_budget_stops_before_the_next_image(settings, png, calls):
    client = create_app(settings, decode_timeout_s=1e-9).test_client()
    b64 = base64.b64encode(png).decode()
    r = client.post("/predict?model=fashion-mnist", json={"images": [b64] * 3})
    assert r.status_code == 413
    assert r.get_json()["error"] == {
        "code": "decode_timeout",
        "message": "the request's 3 images took more than 1e-09 s to decode "
        "(SERVING_DECODE_TIMEOUT_S); send fewer or smaller images",
        "details": {"images": 3, "decode_timeout_s": 1e-9},
    }
    # The first image's header was read; the budget was spent before the second's.
    assert calls == {"base64": 1, "open": 1, "decode": 0}
    r = client.post("/v2/models/fashion-mnist/infer", json=_requests(png, 2)["v2 json"][1]["json"])
    assert r.status_code == 413
    assert "took more than 1e-09 s" in r.get_json()["error"]


def test_the_decode_budget_per_model(settings, png):
    overrides = '{"fashion-mnist": {"decode_timeout_s": 1e-9}}'
    client = create_app(settings, limit_overrides=overrides).test_client()
    b64 = base64.b64encode(png).decode()
    r = client.post("/predict?model=fashion-mnist", json={"images": [b64] * 2})
    assert r.get_json()["error"]["code"] == "decode_timeout"
    digit = base64.b64encode(image_bytes(np.zeros((8, 8), np.uint8))).decode()
    assert client.post("/predict?model=digits", json={"images": [digit] * 2}).status_code == 200
