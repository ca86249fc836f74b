"""Request limits by cost (instances, instances x elements, pixels), per model, every protocol."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from service.app import create_app
from service.errors import BatchTooLarge
from service.inference.limits import Limits, LimitTable
from service.settings import Settings, SettingsError
from tests.helpers import image_bytes


def test_small_vectors_come_in_thousands_images_stay_few(client, fashion):
    r = client.post("/predict?model=circles", json={"instances": [[0.5, 0.5]] * 200})
    assert r.status_code == 200
    assert len(r.get_json()["predictions"]) == 200
    r = client.post("/predict?model=circles", json={"instances": [[0.5, 0.5]] * 4096})
    assert r.status_code == 200
    r = client.post("/predict?model=circles", json={"instances": [[0.5, 0.5]] * 4097})
    assert r.get_json()["error"]["code"] == "batch_too_large"


def _limited(settings, **overrides):
    return create_app(settings, **overrides).test_client()


def test_instances_and_elements_are_both_limited(settings):
    client = _limited(settings, max_instances=300, max_elements=10 * 784)
    assert (
        client.post("/predict?model=circles", json={"instances": [[0, 0]] * 300}).status_code == 200
    )
    r = client.post("/predict?model=circles", json={"instances": [[0, 0]] * 301})
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert error["code"] == "batch_too_large"
    assert error["details"] == {
        "instances": 301,
        "elements": 602,
        "max_instances": 300,
        "max_elements": 7840,
    }
    pixels = np.zeros((28, 28)).tolist()
    assert (
        client.post("/predict?model=fashion-mnist", json={"instances": [pixels] * 10}).status_code
        == 200
    )
    r = client.post("/predict?model=fashion-mnist", json={"instances": [pixels] * 11})
    assert r.status_code == 422
    assert (
        "11 instances (8,624 input elements) is above this model's limits"
        in (r.get_json()["error"]["message"])
    )


def test_limits_are_checked_before_any_image_is_opened(settings, monkeypatch, fashion):
    from service.inference import inputs

    opened = []
    monkeypatch.setattr(inputs, "open_image", lambda *a, **k: opened.append(1))
    client = _limited(settings, max_instances=3)
    b64 = base64.b64encode(image_bytes(fashion["images"][0])).decode()
    r = client.post("/predict?model=fashion-mnist", json={"images": [b64] * 4})
    assert r.status_code == 422
    assert opened == []


def test_per_model_overrides(settings):
    client = _limited(settings, limit_overrides='{"circles": {"max_instances": 2}}')
    r = client.post("/predict?model=circles", json={"instances": [[0, 0]] * 3})
    assert r.get_json()["error"]["details"]["max_instances"] == 2
    assert client.post("/predict?model=blobs", json={"instances": [[0, 0]] * 3}).status_code == 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"circles": {"max_batch": 2}}', r"unknown option\(s\) for circles: \['max_batch'\]"),
        ('{"circles": {"max_instances": 0}}', "circles.max_instances must be a positive integer"),
        ('{"circles": {"max_instances": "2"}}', "must be a positive integer"),
        ('{"circles": {"max_images": 2.5}}', "circles.max_images must be a positive integer"),
        ('{"circles": {"decode_timeout_s": 0}}', "decode_timeout_s must be a positive number"),
        ('{"circles": {"decode_timeout_s": true}}', "decode_timeout_s must be a positive number"),
        ("[1]", "must look like"),
    ],
)
def test_bad_overrides_are_refused_at_start(text, message):
    with pytest.raises(SettingsError, match=message):
        LimitTable(Settings.from_env({}, limit_overrides=text))


def test_the_same_limits_in_every_protocol(settings, fashion):
    client = _limited(settings, max_instances=2)
    x = np.zeros((3, 2), np.float32)
    v2 = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [3, 2], "data": x.ravel().tolist()}
        ]
    }
    r = client.post("/v2/models/circles/infer", json=v2)
    assert r.status_code == 400
    assert "3 instances" in r.get_json()["error"]
    r = client.post("/v1/models/circles:predict", json={"instances": x.tolist()})
    assert r.status_code == 400
    assert "above this model's limits" in r.get_json()["error"]
    r = client.post("/v1/models/circles:classify", json={"examples": [{"x1": 0, "x2": 0}] * 3})
    assert r.status_code == 400
    r = client.post(
        "/v2/models/circles/infer",
        json={**v2, "inputs": [{**v2["inputs"][0], "shape": [2, 2], "data": [0, 0, 0, 0]}]},
    )
    assert r.status_code == 200


def _limits(**given) -> Limits:
    """Small limits: 4 instances, 3 images of 100 pixels, 150 a request; ``given`` wins."""
    values = {
        "max_instances": 4,
        "max_elements": 10,
        "max_image_pixels": 100,
        "max_request_pixels": 150,
        "max_images": 3,
        "decode_timeout_s": 1.0,
    }
    return Limits(**{**values, **given})


def test_limits_object():
    limits = _limits(max_elements=10)
    limits.check(4, 2)
    with pytest.raises(Exception, match="empty"):
        limits.check(0, 2)
    with pytest.raises(Exception, match="5 instances"):
        limits.check(5, 1)
    with pytest.raises(Exception, match="12 input elements"):
        limits.check(3, 4)
    limits.check_images(3)
    with pytest.raises(
        BatchTooLarge, match=r"4 images is above .* 3 images \(SERVING_MAX_IMAGES\)"
    ):
        limits.check_images(4)


def test_the_request_pixel_budget_is_checked_from_headers_before_decoding(settings, monkeypatch):
    from service.inference import inputs
    from tests.helpers import png_header_only

    decoded = []
    real = inputs.model_pixels
    monkeypatch.setattr(inputs, "model_pixels", lambda *a, **k: decoded.append(1) or real(*a, **k))
    client = _limited(settings, max_request_pixels=25_000_000)
    big = base64.b64encode(png_header_only(3000, 3000)).decode()  # 9,000,000 pixels each
    r = client.post("/predict?model=fashion-mnist", json={"images": [big] * 3})
    assert r.status_code == 413
    error = r.get_json()["error"]
    assert error["code"] == "image_too_large"
    assert error["message"] == (
        "the request's 3 images hold 27,000,000 pixels; the limit is 25,000,000 per request"
    )
    assert decoded == []
    r = client.post(
        "/v2/models/fashion-mnist/infer",
        json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": [big] * 3}]},
    )
    assert (r.status_code, decoded) == (413, [])
    one = _limited(settings, max_request_pixels=1_000_000)  # one image: the smaller limit holds
    r = one.post(
        "/predict?model=fashion-mnist", data=png_header_only(2000, 2000), content_type="image/png"
    )
    assert r.status_code == 413
    assert "the limit is 1,000,000" in r.get_json()["error"]["message"]


def test_a_request_larger_than_the_batch_size_runs_in_slices(settings):
    from prometheus_client import REGISTRY

    def calls_and_rows():
        labels = {"model": "circles", "version": "1"}
        return (
            REGISTRY.get_sample_value("batch_size_count", labels) or 0,
            REGISTRY.get_sample_value("batch_size_sum", labels) or 0,
        )

    app = create_app(settings, batch_max_size=8, batching=False)
    client = app.test_client()
    x = np.random.default_rng(1).normal(size=(100, 2)).round(3).tolist()
    before = calls_and_rows()
    sliced = client.post("/predict?model=circles", json={"instances": x}).get_json()
    after = calls_and_rows()
    assert after[0] - before[0] == 13  # ceil(100 / 8) onnxruntime calls
    assert after[1] - before[1] == 100
    whole = create_app(settings, batch_max_size=128).test_client()
    expected = whole.post("/predict?model=circles", json={"instances": x}).get_json()
    assert sliced["predictions"] == expected["predictions"]


def test_a_tables_rows_are_made_only_once_their_count_fits():
    """V2 and TF Serving's columns hold a batch as columns: 8 M elements of one BOOL
    feature must be refused on their count, before a single row is built."""
    from service.contract.preprocessing import FeatureSpec
    from service.contract.tabular import Column
    from service.inference.inputs import NamedRows, by_feature

    limits = _limits(max_elements=100)
    columns = (Column("fresh", "boolean", 0.0), Column("input", "numeric", 1.0))
    spec = FeatureSpec(2, ("fresh", "input"), columns=columns)
    built = []
    rows = NamedRows(lambda: built.append(1) or [{"fresh": True}] * 8_000_000, "row", 8_000_000)
    with pytest.raises(BatchTooLarge, match="8,000,000 instances"):
        rows.tensor(spec, limits)
    assert built == []
    small = NamedRows(lambda: [{"fresh": True}, {"fresh": "no", "input": 2}], "row", 2)
    assert small.tensor(spec, limits).tolist() == [[1.0, 1.0], [0.0, 2.0]]
    # a feature called like the model's tensor is still a feature, beside the others
    assert by_feature(spec, "input", {"fresh", "input"})
    assert by_feature(spec, "input", {"input"})  # not plain: the tensor is refused anyway
    plain = FeatureSpec(2, ("x1", "input"))
    assert not by_feature(plain, "input", {"input"})
    assert by_feature(plain, "input", {"x1", "input"}) is False
    assert by_feature(plain, "input", {"x1"})
