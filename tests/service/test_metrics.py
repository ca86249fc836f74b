"""service.metrics: what requests record, error kinds, and multiprocess summation."""

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service import metrics


def _value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_json", "bad_request"),
        (404, "model_not_found", "not_found"),
        (413, "image_too_large", "payload_too_large"),
        (415, "unsupported_media_type", "unsupported_media"),
        (422, "batch_too_large", "validation"),
        (503, "model_unavailable", "unavailable"),
        (500, "inference_error", "inference"),
        (500, "internal_error", "internal"),
    ],
)
def test_error_kinds(status, code, kind):
    assert metrics.error_kind(status, code) == kind


def _snapshot() -> dict[str, float]:
    labels = {"model": "blobs", "version": "1"}
    return {
        "requests": _value("http_requests_total", endpoint="/predict", method="POST", status="200"),
        "blob_0": _value("predictions_total", label="blob_0", **labels),
        "batches": _value("batch_size_count", **labels),
        "instances": _value("batch_size_sum", **labels),
        "inference": _value("inference_duration_seconds_count", **labels),
        "preprocessing": _value("preprocessing_duration_seconds_count", **labels),
        "confidence": _value("prediction_confidence_count", **labels),
    }


def test_a_prediction_request_records_everything(client):
    before = _snapshot()
    body = {"model": "blobs", "instances": [[-5, 2], [-5.5, 2.2], [5, -2]]}
    assert client.post("/predict", json=body).status_code == 200
    after = _snapshot()
    deltas = {k: after[k] - before[k] for k in before}
    assert deltas == {
        "requests": 1,
        "blob_0": 2,
        "batches": 1,
        "instances": 3,
        "inference": 1,
        "preprocessing": 1,
        "confidence": 3,
    }


def test_an_image_request_records_its_decode_and_resize_times(client):
    """Two images in one request: one observation each of decode and resize, whose sums
    lie within the request's preprocessing time; a feature model records neither."""
    from tests.helpers import image_bytes

    labels = {"model": "fashion-mnist", "version": "2"}
    names = ("image_decode_duration_seconds", "image_resize_duration_seconds")
    before = {n: (_value(n + "_count", **labels), _value(n + "_sum", **labels)) for n in names}
    pre_before = _value("preprocessing_duration_seconds_sum", **labels)
    picture = np.random.default_rng(0).integers(0, 256, (300, 200)).astype(np.uint8)
    b64 = base64.b64encode(image_bytes(picture)).decode()
    r = client.post("/predict", json={"model": "fashion-mnist", "images": [b64, b64]})
    assert r.status_code == 200
    spent = _value("preprocessing_duration_seconds_sum", **labels) - pre_before
    parts = 0.0
    for name in names:
        count, total = _value(name + "_count", **labels), _value(name + "_sum", **labels)
        assert count - before[name][0] == 1
        assert total - before[name][1] > 0
        parts += total - before[name][1]
    assert parts <= spent
    client.post("/predict", json={"model": "blobs", "instance": [5, -2]})
    assert _value("image_decode_duration_seconds_count", model="blobs", version="1") == 0


def test_errors_are_counted_by_kind_and_route_template(client):
    before = _value("errors_total", kind="not_found", code="version_not_found")
    route = "/models/{model}/versions/{version}/predict"
    before_http = _value("http_requests_total", endpoint=route, method="POST", status="404")
    client.post("/models/circles/versions/7/predict", json={"instance": [0, 0]})
    assert _value("errors_total", kind="not_found", code="version_not_found") == before + 1
    assert _value("http_requests_total", endpoint=route, method="POST", status="404") == (
        before_http + 1
    )
    unmatched = _value("http_requests_total", endpoint="unmatched", method="GET", status="404")
    client.get("/no/such/path/12345")
    assert _value("http_requests_total", endpoint="unmatched", method="GET", status="404") == (
        unmatched + 1
    )


def test_model_status_published_at_load(client):
    assert _value("model_loaded", model="circles", version="1") == 1
    assert (
        _value(
            "model_execution_provider",
            model="circles",
            version="1",
            provider="CPUExecutionProvider",
        )
        == 1
    )
    assert _value("model_load_duration_seconds", model="circles", version="1") > 0


def test_metrics_endpoint_is_parseable(client):
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.content_type == "text/plain; version=0.0.4; charset=utf-8"
    names = {f.name for f in text_string_to_metric_families(r.get_data(as_text=True))}
    assert {"http_requests", "predictions", "model_loaded", "batch_size"} <= names


_WORKER = """
from service import metrics
for _ in range({n}):
    metrics.HTTP_REQUESTS.labels("/predict", "POST", "200").inc()
metrics.HTTP_IN_PROGRESS.labels("/predict", "POST").inc()
metrics.MODEL_LOADED.labels("circles", "1").set({loaded})
"""


def _run_json(code: str, env: dict, *args: str):
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_multiprocess_values_add_up_and_dead_workers_drop_live_gauges(tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    pids = []
    for n, loaded in ((3, 1), (4, 0)):
        code = _WORKER.format(n=n, loaded=loaded) + "import os; print(os.getpid())"
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        pids.append(int(out.stdout))
    read = (
        "import json; from service import metrics; from prometheus_client.parser import "
        "text_string_to_metric_families as parse\n"
        "import sys\n"
        "for pid in sys.argv[1:]: metrics.mark_process_dead(int(pid))\n"
        "body, _ = metrics.exposition()\n"
        "print(json.dumps({s.name + str(sorted(s.labels.items())): s.value "
        "for f in parse(body.decode()) for s in f.samples}))"
    )
    scrape = _run_json(read, env)
    key = "http_requests_total[('endpoint', '/predict'), ('method', 'POST'), ('status', '200')]"
    assert scrape[key] == 7  # 3 + 4, summed over the two processes
    in_progress = "http_requests_in_progress[('endpoint', '/predict'), ('method', 'POST')]"
    assert scrape[in_progress] == 2
    assert scrape["model_loaded[('model', 'circles'), ('version', '1')]"] == 0  # livemin
    # The second process dies: its live gauges go, its counts stay.
    scrape = _run_json(read, env, str(pids[1]))
    assert scrape[key] == 7
    assert scrape[in_progress] == 1
    assert scrape["model_loaded[('model', 'circles'), ('version', '1')]"] == 1


def test_observe_many_counts_as_observing_each_value():
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    one = Histogram("one", "each", buckets=(0.1, 0.5, 1.0), registry=registry)
    many = Histogram("many", "all", buckets=(0.1, 0.5, 1.0), registry=registry)
    values = np.array([0.0, 0.1, 0.1000001, 0.5, 0.7, 1.0, 3.0, 0.05])  # edges included
    for v in values:
        one.observe(float(v))
    metrics.observe_many(many, values)
    metrics.observe_many(many, np.array([]))
    samples = {
        family.name: {
            (s.name.removeprefix(family.name), s.labels.get("le")): s.value
            for s in family.samples
            if not s.name.endswith("_created")
        }
        for family in registry.collect()
    }
    assert samples["many"] == pytest.approx(samples["one"])
    assert samples["many"][("_bucket", "0.1")] == 3
    assert samples["many"][("_count", None)] == len(values)
    assert samples["many"][("_sum", None)] == pytest.approx(values.sum())
