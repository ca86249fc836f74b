"""POST /predict and friends through Flask's test client: every input form, every bad input."""

import base64
import io
import math

import numpy as np
import pytest

from service.contract import metadata as contract
from tests.helpers import MODELS, image_bytes, png_header_only


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _check_probabilities(prediction, classes):
    probs = prediction["probabilities"]
    assert set(probs) == set(classes)
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
    assert prediction["label"] == max(probs, key=probs.get)
    assert prediction["confidence"] == probs[prediction["label"]]
    assert prediction["index"] == classes.index(prediction["label"])


# --- feature vectors -------------------------------------------------------------------------


def test_circles_batch_by_query_parameter(client):
    r = client.post("/predict?model=circles", json={"instances": [[0.0, 0.05], [0.99, 0.1]]})
    assert r.status_code == 200
    body = r.get_json()
    assert body["model"] == {
        "name": "circles",
        "version": 1,
        "task": "binary",
        "provider": "CPUExecutionProvider",
    }
    assert [p["label"] for p in body["predictions"]] == ["inner", "outer"]
    for p in body["predictions"]:
        _check_probabilities(p, ["outer", "inner"])
        assert p["confidence"] > 0.99


def test_single_vector_in_body_with_model_field(client):
    r = client.post("/predict", json={"model": "blobs", "instance": [5.0, -2.0]})
    assert r.status_code == 200
    (p,) = r.get_json()["predictions"]
    assert p["label"] == "blob_3"
    _check_probabilities(p, ["blob_0", "blob_1", "blob_2", "blob_3"])


def test_flat_list_in_instances_is_one_vector(client):
    r = client.post("/models/blobs/predict", json={"instances": [-5.0, 2.0]})
    assert [p["label"] for p in r.get_json()["predictions"]] == ["blob_0"]


def test_versioned_route_top_k_and_logits(client):
    r = client.post(
        "/models/blobs/versions/1/predict",
        json={"instances": [[1.0, 2.0]], "top_k": 2, "logits": True},
    )
    assert r.status_code == 200
    (p,) = r.get_json()["predictions"]
    assert len(p["probabilities"]) == 2
    assert min(p["probabilities"].values()) >= 0
    assert p["label"] == "blob_2"
    assert len(p["logits"]) == 4
    meta = contract.read(MODELS / "blobs" / "1")  # the fitted temperature divides the logits
    z = np.array(p["logits"]) / meta["output"].get("temperature", 1.0)
    exp = np.exp(z - z.max())
    assert p["confidence"] == pytest.approx(exp[2] / exp.sum(), abs=1e-9)


def test_binary_logit_and_sigmoid(client):
    r = client.post("/predict?model=circles&logits=true", json={"instance": [0.0, 0.0]})
    (p,) = r.get_json()["predictions"]
    (logit,) = p["logits"]
    assert p["probabilities"]["inner"] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-12)


def test_request_id_generated_or_echoed(client):
    r = client.post("/predict?model=circles", json={"instance": [0, 0]})
    generated = r.headers["X-Request-ID"]
    assert len(generated) == 32
    assert r.get_json()["request_id"] == generated
    r = client.post(
        "/predict?model=circles", json={"instance": [0, 0]}, headers={"X-Request-ID": "client-42"}
    )
    assert r.headers["X-Request-ID"] == "client-42"
    assert r.get_json()["request_id"] == "client-42"
    r = client.post(
        "/predict?model=circles",
        json={"instance": [0, 0]},
        headers={"X-Request-ID": "bad id with spaces"},
    )
    assert r.headers["X-Request-ID"] != "bad id with spaces"


# --- images ----------------------------------------------------------------------------------


def test_default_model_png_body_matches_in_process_prediction(client, fashion):
    for i in range(8):
        r = client.post(
            "/predict", data=image_bytes(fashion["images"][i]), content_type="image/png"
        )
        assert r.status_code == 200
        body = r.get_json()
        assert body["model"]["name"] == "fashion-mnist"
        (p,) = body["predictions"]
        probs = np.array([p["probabilities"][c] for c in fashion["classes"]])
        np.testing.assert_allclose(probs, fashion["probabilities"][i], atol=1e-6)


def test_base64_images_batch(client, fashion):
    images = [_b64(image_bytes(fashion["images"][i])) for i in range(4)]
    r = client.post("/predict", json={"images": images})
    labels = [p["index"] for p in r.get_json()["predictions"]]
    assert labels == np.argmax(fashion["logits"][:4], axis=1).tolist()


def test_instances_mix_b64_objects_data_urls_and_pixel_arrays(client, fashion):
    png = image_bytes(fashion["images"][0])
    r = client.post(
        "/predict",
        json={
            "instances": [
                {"b64": _b64(png)},
                "data:image/png;base64," + _b64(png),
                fashion["images"][0].tolist(),
            ]
        },
    )
    assert r.status_code == 200
    preds = r.get_json()["predictions"]
    assert len({p["label"] for p in preds}) == 1
    assert preds[0]["confidence"] == pytest.approx(preds[2]["confidence"], abs=1e-6)


def test_multipart_several_files_and_form_fields(client, fashion):
    data = {
        "file": [(io.BytesIO(image_bytes(fashion["images"][i])), f"{i}.png") for i in range(3)],
        "top_k": "1",
    }
    r = client.post("/models/fashion-mnist/predict", data=data, content_type="multipart/form-data")
    assert r.status_code == 200
    preds = r.get_json()["predictions"]
    assert [p["index"] for p in preds] == np.argmax(fashion["logits"][:3], axis=1).tolist()
    assert all(len(p["probabilities"]) == 1 for p in preds)


def test_multipart_model_field_selects_model(client):
    digit = np.zeros((40, 40), np.uint8)
    digit[5:35, 18:23] = 255  # a "1": light stroke on dark
    data = {"image": (io.BytesIO(image_bytes(digit)), "one.png"), "model": "digits"}
    r = client.post("/predict", data=data, content_type="multipart/form-data")
    assert r.status_code == 200
    assert r.get_json()["model"]["name"] == "digits"
    assert r.get_json()["predictions"][0]["label"] == "1"


def test_dark_object_on_white_jpeg_is_inverted(client, fashion):
    i = int(np.argmax(fashion["logits"].max(axis=1)))  # a confident image
    photo = 255 - np.kron(fashion["images"][i], np.ones((4, 4), np.uint8))
    rgb = np.repeat(photo[:, :, None], 3, axis=2)
    r = client.post(
        "/predict", data=image_bytes(rgb, "JPEG", quality=95), content_type="image/jpeg"
    )
    assert r.get_json()["predictions"][0]["index"] == int(np.argmax(fashion["logits"][i]))


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "LA", "1", "CMYK"])
def test_image_modes_are_accepted(client, fashion, mode):
    from PIL import Image

    image = Image.fromarray(fashion["images"][0]).convert("RGB" if mode == "CMYK" else "L")
    if mode == "I;16":
        image = Image.fromarray(fashion["images"][0].astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if mode == "CMYK" else "PNG")
    r = client.post("/predict", data=buffer.getvalue(), content_type="image/png")
    assert r.status_code == 200, r.get_json()
    if mode in ("RGBA", "P", "I;16", "LA"):
        assert r.get_json()["predictions"][0]["index"] == int(np.argmax(fashion["logits"][0]))


# --- bad input -------------------------------------------------------------------------------


def _error(r, status, code):
    assert r.status_code == status, r.get_json()
    body = r.get_json()
    assert body["error"]["code"] == code
    assert body["request_id"] == r.headers["X-Request-ID"]
    assert "Traceback" not in r.get_data(as_text=True)
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b'{"instances": [[1, 2]', 400, "invalid_json", "malformed JSON"),
        (b"", 400, "invalid_json", "empty"),
        (b'{"instances": [[NaN, 1]]}', 400, "invalid_json", "NaN is not a valid JSON number"),
        (b'{"instances": [[Infinity, 1]]}', 400, "invalid_json", "Infinity"),
        (b"[[1, 2]]", 422, "validation_error", "must be an object"),
        (b'{"model": "circles"}', 422, "validation_error", "exactly one of"),
        (b'{"instances": [[1, 2]], "image": "x"}', 422, "validation_error", "exactly one of"),
        (b'{"instances": [[1, 2]], "colour": 1}', 422, "validation_error", "Unknown field"),
        (b'{"instances": [[1, 2, 3]]}', 422, "validation_error", "has 3 values; the model takes 2"),
        (b'{"instances": [[1], [2, 3]]}', 422, "validation_error", "instances[0] has 1 value;"),
        (b'{"instances": [[[1, 2]]]}', 422, "validation_error", "flat list of 2 values"),
        (
            b'{"instances": [[1, "two"]]}',
            422,
            "validation_error",
            "instances[0]: feature 'x2' must be a number, got \"two\"",
        ),
        (
            b'{"instances": [[true, 2]]}',
            422,
            "validation_error",
            "instances[0]: feature 'x1' must be a number, got true",
        ),
        (b'{"instances": [[null, 2]]}', 422, "validation_error", "'x1' is missing"),
        (b'{"instances": [{"x1": 1, "y": 2}]}', 422, "validation_error", "unknown feature 'y'"),
        (b'{"instances": [1e400, 2]}', 422, "validation_error", "finite"),
        (b'{"instances": []}', 422, "validation_error", "the batch is empty"),
        (b'{"instances": "abc"}', 422, "validation_error", "Not a valid list"),
        (b'{"instances": [[1, 2]], "version": 0}', 422, "validation_error", "version"),
        (b'{"instances": [[1, 2]], "top_k": "many"}', 422, "validation_error", "top_k"),
    ],
)
def test_bad_json_bodies(client, body, status, code, message):
    r = client.post("/predict?model=circles", data=body, content_type="application/json")
    assert message in _error(r, status, code)


def test_unknown_model_and_version(client):
    r = client.post("/predict?model=nope", json={"instance": [0, 0]})
    assert "model 'nope' not found" in _error(r, 404, "model_not_found")
    assert "circles" in r.get_json()["error"]["details"]["available"]
    r = client.post("/models/circles/versions/9/predict", json={"instance": [0, 0]})
    assert "no version 9" in _error(r, 404, "version_not_found")
    r = client.post("/models/circles/predict", json={"model": "blobs", "instance": [0, 0]})
    assert "conflicts" in _error(r, 422, "validation_error")


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", ""])
def test_unsupported_content_type(client, ctype):
    r = client.post("/predict", data=b"hello", content_type=ctype or None)
    assert "not supported" in _error(r, 415, "unsupported_media_type")


def test_body_above_maximum(settings):
    from service.app import create_app

    client = create_app(settings, max_body_bytes=1000).test_client()
    r = client.post("/predict", data=b"\x89PNG" + b"0" * 2000, content_type="image/png")
    assert "above the limit of 1,000 bytes" in _error(r, 413, "payload_too_large")
    big = {"instances": [[0.5, 0.5]] * 200}
    r = client.post("/predict?model=circles", json=big)
    _error(r, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a not really", "not an image Pillow can read"),
        (b"hello, not an image", "not an image Pillow can read"),
        (b"", "is empty"),
    ],
)
def test_bytes_that_are_not_images(client, data, message):
    r = client.post("/predict", data=data, content_type="image/png")
    assert message in _error(r, 400, "invalid_image")


def test_truncated_png(client, fashion):
    png = image_bytes(fashion["images"][0])
    r = client.post("/predict", data=png[: len(png) // 2], content_type="image/png")
    _error(r, 400, "invalid_image")


def test_bad_base64(client):
    r = client.post("/predict", json={"image": "not base64 at all!"})
    assert "image is not valid base64" in _error(r, 400, "invalid_image")
    r = client.post("/predict", json={"instances": [{"b64": 5}]})
    assert "instances[0].b64 must be a base64 string" in _error(r, 422, "validation_error")
    r = client.post("/predict", json={"instances": [True]})
    assert "instances[0] must be a base64 image" in _error(r, 422, "validation_error")


def test_pixel_arrays_checked(client):
    r = client.post("/predict", json={"instance": [[0] * 27] * 28})
    assert "must have shape" in _error(r, 422, "validation_error")
    r = client.post("/predict", json={"instance": [[300] * 28] * 28})
    assert "[0, 255]" in _error(r, 422, "validation_error")


def test_images_sent_to_a_feature_model(client, fashion):
    r = client.post(
        "/predict?model=circles", data=image_bytes(fashion["images"][0]), content_type="image/png"
    )
    assert "takes feature vectors" in _error(r, 422, "validation_error")


def test_multipart_without_files(client):
    r = client.post("/predict", data={"model": "fashion-mnist"}, content_type="multipart/form-data")
    assert "no file" in _error(r, 422, "validation_error")


def test_decompression_bomb_rejected_before_decoding(client):
    r = client.post("/predict", data=png_header_only(20_000, 20_000), content_type="image/png")
    message = _error(r, 413, "image_too_large")
    assert "declares 400,000,000 pixels; the limit is 16,000,000" in message


def test_wrong_method_and_unknown_route(client):
    r = client.get("/predict")
    assert "GET is not allowed" in _error(r, 405, "method_not_allowed")
    r = client.get("/nowhere")
    assert "no route for GET /nowhere" in _error(r, 404, "not_found")


def test_service_keeps_serving_after_bad_requests(client):
    for body in (b"{", b"[]", b'{"instances": [["x", 1]]}'):
        client.post("/predict?model=circles", data=body, content_type="application/json")
    r = client.post("/predict?model=circles", json={"instance": [0, 0]})
    assert r.status_code == 200


def test_no_model_named_and_no_default(settings):
    from service.app import create_app

    client = create_app(settings, default_model="").test_client()
    r = client.post("/predict", json={"instance": [0, 0]})
    assert "SERVING_DEFAULT_MODEL is not set" in _error(r, 422, "validation_error")
    assert client.post("/predict?model=circles", json={"instance": [0, 0]}).status_code == 200


# --- the common body shape skips marshmallow ------------------------------------------------

_OPTION_CASES = [
    {"instances": [[1, 2]]},
    {"instances": [[1, 2]], "model": "circles", "version": 1, "top_k": 2, "logits": True},
    {"instance": [1, 2], "model": "x" * 64},
    {"instance": "abc"},
    {"instance": 0},
    {"images": ["aGk=", "aGk="]},
    {"image": "aGk=", "logits": False},
    {"instances": [[None, 2]]},
    {"instances": []},
    {"instance": 1, "version": "2"},
    {"instance": 1, "version": "stable"},
    # each of these is not the common shape: the schema loads it or words the error
    {"instances": [None]},
    {"instance": None},
    {"images": ["a", None]},
    {"images": "a"},
    {"image": 3},
    {"model": "", "instance": 1},
    {"model": "x" * 65, "instance": 1},
    {"model": 3, "instance": 1},
    {"instance": 1, "version": True},
    {"instance": 1, "version": 2.0},
    {"instance": 1, "version": "02"},
    {"instance": 1, "version": "2x!"},
    {"instance": 1, "version": 0},
    {"instance": 1, "top_k": -1},
    {"instance": 1, "logits": "true"},
    {"instance": 1, "logits": 1},
    {"instance": 1, "colour": 1},
    {"instance": 1, "image": "a"},
    {"model": "circles"},
    {},
]


@pytest.mark.parametrize("data", _OPTION_CASES)
def test_plain_options_agree_with_the_schema(data):
    from marshmallow import ValidationError

    from service.protocols.schemas import PredictJSONSchema, plain_options

    try:
        expected = PredictJSONSchema().load(data)
    except ValidationError:
        expected = None
    got = plain_options(dict(data))
    if got is not None:  # the shortcut answers only where the schema loads the same dict
        assert got == expected
    assert (got is None) == (data in _OPTION_CASES[11:])


def test_base64_as_clients_write_it(client, fashion):
    png = image_bytes(fashion["images"][0])
    plain = base64.b64encode(png).decode()
    expected = client.post("/predict", json={"image": plain}).get_json()["predictions"]
    wrapped = "\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))  # MIME lines
    for text in (plain.rstrip("="), base64.urlsafe_b64encode(png).decode(), wrapped):
        r = client.post("/predict", json={"image": text})
        assert r.status_code == 200
        assert r.get_json()["predictions"] == expected
    r = client.post("/predict", json={"image": plain[:-5] + "!!!!!"})
    assert r.get_json()["error"]["code"] == "invalid_image"


def test_deeply_nested_json_is_a_400(client):
    r = client.post("/predict?model=circles", data=b"[" * 200_000, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"] == {
        "code": "invalid_json",
        "message": "the JSON is nested too deeply",
    }


def test_show_input_returns_each_instance_as_the_model_sees_it(client, fashion):
    import base64
    import io

    import numpy as np
    from PIL import Image

    from service.contract import metadata as contract
    from service.contract.preprocessing import features_to_tensor, pixels_to_tensor, spec_from_dict
    from tests.helpers import MODELS, image_bytes

    image = fashion["images"][0]
    r = client.post(
        "/predict?model=fashion-mnist&show_input=true",
        data=image_bytes(image),
        content_type="image/png",
    )
    (prediction,) = r.get_json()["predictions"]
    url = prediction["input"]
    assert url.startswith("data:image/png;base64,")
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert shown.shape == (28, 28)
    latest = contract.latest_version_dirs(MODELS)
    meta = contract.read(next(p for p in latest if p.parent.name == "fashion-mnist"))
    spec = spec_from_dict(meta["preprocessing"])
    expected = pixels_to_tensor(image[np.newaxis], spec)[0, :, :, 0]  # in [0, 1]
    assert np.abs(shown / 255.0 - expected).max() <= 0.5 / 255 + 1e-9
    features = client.post(
        "/predict?model=circles", json={"instances": [[0.3, -0.2], [1.0, 0.5]], "show_input": True}
    ).get_json()
    circles = spec_from_dict(contract.read(MODELS / "circles" / "1")["preprocessing"])
    tensor = features_to_tensor(np.array([[0.3, -0.2], [1.0, 0.5]]), circles)
    assert [p["input"] for p in features["predictions"]] == tensor.tolist()
    plain = client.post("/predict?model=circles", json={"instances": [[0.3, -0.2]]}).get_json()
    assert "input" not in plain["predictions"][0]


def test_input_png_stretches_standardised_values_and_reads_every_layout():
    import base64
    import io

    import numpy as np
    from PIL import Image

    from service.contract.images import input_png

    def shown(url):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))

    rgb = np.random.default_rng(0).random((3, 4, 5))  # NCHW, values in [0, 1]
    assert np.array_equal(
        shown(input_png(rgb, 4, 5, 3, "nchw")),
        np.round(np.moveaxis(rgb, 0, -1) * 255).astype(np.uint8),
    )
    standardised = np.linspace(-2, 3, 12)  # flat, outside [0, 1]: min -> 0, max -> 255
    gray = shown(input_png(standardised, 3, 4, 1, "flat"))
    assert gray.shape == (3, 4)
    assert (gray.min(), gray.max()) == (0, 255)


def test_features_by_name_or_as_numeric_text_are_the_same_vector(client):
    """A numeric model takes its features by name (any order), or numbers written as text,
    and answers exactly as for the positional vector."""
    positional = client.post("/predict?model=circles", json={"instances": [[0.3, -0.7]]})
    by_name = client.post("/predict?model=circles", json={"instances": [{"x2": -0.7, "x1": 0.3}]})
    as_text = client.post("/predict?model=circles", json={"instance": ["0.3", " -0.7 "]})
    one = client.post("/predict?model=circles", json={"instance": {"x1": 0.3, "x2": -0.7}})
    expected = positional.get_json()["predictions"]
    for response in (by_name, as_text, one):
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["predictions"] == expected
