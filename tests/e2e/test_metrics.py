"""Metrics under real gunicorn (2 workers): exact counts, a real Prometheus, a killed worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import call, free_port, running_server
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

CIRCLES = {"instances": [[0.1, -0.2], [0.95, 0.3]]}  # inner, outer
BLOBS = {"instances": [[-5.0, 2.0], [5.0, -2.0], [1.0, 2.0]]}  # blob_0, blob_3, blob_2
PNG = (ROOT / "docs" / "examples" / "ankle-boot.png").read_bytes()

# (path, body, content type, expected status), and how many of each.
TRAFFIC = [
    (("/predict?model=circles", json.dumps(CIRCLES).encode(), "application/json", 200), 10),
    (("/models/blobs/predict", json.dumps(BLOBS).encode(), "application/json", 200), 6),
    (("/predict", PNG, "image/png", 200), 4),
    (("/predict", b"{oops", "application/json", 400), 3),
    (("/predict?model=nope", b'{"instance": [1, 2]}', "application/json", 404), 2),
    (("/predict", b"x", "text/plain", 415), 2),
    (("/predict?model=circles", b'{"instance": [1, 2, 3]}', "application/json", 422), 3),
]


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """/metrics parsed with prometheus-client's parser: (sample name, labels) -> value."""
    status, headers, text = call("GET", url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def predict_pids(server) -> set[int]:
    """Worker pids that answered a prediction request, from the JSON access log."""
    return {
        line["pid"]
        for line in server.log_lines()
        if line.get("logger") == "service.access" and line["path"].endswith("predict")
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A dedicated server (fresh metrics folder) after whole rounds of the known traffic.

    Which worker accepts a connection is the kernel's choice, so rounds are sent (16 at a
    time) until both workers have served predictions; every expected count is per round.
    Dynamic batching is on (it is off by default) so that its metrics are counted too.
    """
    with running_server(tmp_path_factory.mktemp("metrics-server"), batching="true") as server:
        jobs = [request for request, count in TRAFFIC for _ in range(count)]

        def send(job):
            path, body, ctype, expected = job
            status, _, _ = call("POST", server.url + path, body, ctype)
            return status == expected

        server.rounds = 0
        while server.rounds < 10 and (server.rounds == 0 or len(predict_pids(server)) < 2):
            with ThreadPoolExecutor(16) as pool:
                assert all(pool.map(send, jobs))
            server.rounds += 1
        yield server


def test_http_request_counts_are_exact_across_workers(loaded):
    samples = scrape(loaded.url)
    by_status = Counter()
    for (path, _, _, status), count in TRAFFIC:
        endpoint = "/models/{model}/predict" if path.startswith("/models") else "/predict"
        by_status[(endpoint, str(status))] += count
    for (endpoint, status), count in by_status.items():
        count *= loaded.rounds
        labels = {"endpoint": endpoint, "method": "POST", "status": status}
        assert value(samples, "http_requests_total", **labels) == count, labels
        assert value(samples, "http_request_duration_seconds_count", **labels) == count, labels
    assert value(samples, "http_requests_in_progress", endpoint="/predict", method="POST") == 0
    assert value(samples, "http_requests_in_progress", endpoint="/metrics", method="GET") == 1

    # Both workers served /predict, so the totals above really are sums over processes.
    assert len(predict_pids(loaded)) == 2


LATEST = {"circles": "1", "blobs": "1", "digits": "1", "fashion-mnist": "2"}  # what serves


def test_model_metrics_are_exact(loaded):
    samples, n = scrape(loaded.url), loaded.rounds
    expected_predictions = {
        ("circles", "inner"): 10,
        ("circles", "outer"): 10,
        ("blobs", "blob_0"): 6,
        ("blobs", "blob_3"): 6,
        ("blobs", "blob_2"): 6,
        ("fashion-mnist", "Ankle boot"): 4,
    }
    for (model, label), count in expected_predictions.items():
        labels = {"model": model, "version": LATEST[model], "label": label}
        assert value(samples, "predictions_total", **labels) == count * n
    total = sum(v for (name, _), v in samples.items() if name == "predictions_total")
    assert total == 42 * n
    for model, requests, instances in (
        ("circles", 10, 20),
        ("blobs", 6, 18),
        ("fashion-mnist", 4, 4),
    ):
        requests, instances = requests * n, instances * n
        labels = {"model": model, "version": LATEST[model]}
        # Dynamic batching may merge concurrent requests into fewer onnxruntime calls, but
        # every instance is inferred exactly once and every request queued exactly once.
        calls = value(samples, "batch_size_count", **labels)
        assert 1 <= calls <= requests
        assert value(samples, "batch_size_sum", **labels) == instances
        assert value(samples, "inference_duration_seconds_count", **labels) == calls
        assert value(samples, "batch_queue_duration_seconds_count", **labels) == requests
        assert value(samples, "preprocessing_duration_seconds_count", **labels) == requests
        assert value(samples, "prediction_confidence_count", **labels) == instances
        assert 0 < value(samples, "inference_duration_seconds_sum", **labels) < calls


def test_error_and_model_status_metrics(loaded):
    samples, n = scrape(loaded.url), loaded.rounds
    assert value(samples, "errors_total", kind="bad_request", code="invalid_json") == 3 * n
    assert value(samples, "errors_total", kind="not_found", code="model_not_found") == 2 * n
    assert (
        value(samples, "errors_total", kind="unsupported_media", code="unsupported_media_type")
        == 2 * n
    )
    assert value(samples, "errors_total", kind="validation", code="validation_error") == 3 * n
    for model, version in (*LATEST.items(), ("fashion-mnist", "1")):
        assert value(samples, "model_loaded", model=model, version=version) == 1
        assert (
            value(
                samples,
                "model_execution_provider",
                model=model,
                version=version,
                provider="CPUExecutionProvider",
            )
            == 1
        )
        assert 0 < value(samples, "model_load_duration_seconds", model=model, version=version) < 5


def test_one_json_log_line_per_request(loaded):
    access = [line for line in loaded.log_lines() if line.get("logger") == "service.access"]
    predict = [line for line in access if line["path"].endswith("predict")]
    assert len(predict) == sum(count for _, count in TRAFFIC) * loaded.rounds
    for line in predict:
        assert {
            "time",
            "request_id",
            "method",
            "path",
            "status",
            "duration_ms",
            "model",
            "version",
            "instances",
        } <= set(line)
    ok = [line for line in predict if line["status"] == 200]
    n = loaded.rounds
    assert Counter(line["model"] for line in ok) == {
        "circles": 10 * n,
        "blobs": 6 * n,
        "fashion-mnist": 4 * n,
    }
    assert {line["instances"] for line in ok if line["model"] == "blobs"} == {3}
    bad = [line for line in predict if line["status"] == 415]
    assert all(line["error"] == "unsupported_media_type" for line in bad)
    warnings = [line for line in loaded.log_lines() if line["level"] == "WARNING"]
    assert {line["request_id"] for line in bad} <= {line.get("request_id") for line in warnings}


def test_a_real_prometheus_scrapes_and_answers_queries(loaded, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: scripts/test.sh installs Debian's prometheus package"
    port = free_port()
    target = loaded.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: serving\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    api = f"http://127.0.0.1:{port}"

    def query(expr: str) -> list:
        url = api + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, _, body = call("GET", url)
        assert status == 200, body
        return body["data"]["result"]

    def wait_for(expr: str, expected: float) -> float:
        deadline, got = time.monotonic() + 45, None
        while time.monotonic() < deadline:
            try:
                result = query(expr)
                got = float(result[0]["value"][1]) if result else None
                if got == expected:
                    return got
            except OSError:
                pass
            time.sleep(0.5)
        log = (tmp_path / "prometheus.log").read_text()[-2000:]
        pytest.fail(f"{expr} = {got}, expected {expected}\n{log}")

    try:
        wait_for('up{job="serving"}', 1.0)
        n = loaded.rounds
        wait_for(
            'sum(http_requests_total{job="serving", endpoint="/predict", status="200"})', 14.0 * n
        )
        wait_for('sum(http_requests_total{job="serving", status=~"4.."})', 10.0 * n)
        # The confidence of every circles prediction is above 0.999, so all of them sit in
        # the (0.999, 1] bucket and Prometheus' linear interpolation puts the median in the
        # middle of it.
        quantile = (
            "histogram_quantile(0.5, sum by (le) (prediction_confidence_bucket{model='circles'}))"
        )
        assert wait_for(quantile, 0.9995) == 0.9995
        result = query('sum by (label) (predictions_total{job="serving", model="circles"})')
        assert {r["metric"]["label"]: float(r["value"][1]) for r in result} == {
            "inner": 10.0 * n,
            "outer": 10.0 * n,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_killed_worker_keeps_its_counts_and_loses_its_live_gauges(loaded):
    before = scrape(loaded.url)
    pids = {line["pid"] for line in loaded.log_lines() if line.get("logger") == "service.access"}
    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(
        f"_{victim}.db" in p.name and p.name.startswith("gauge_live")
        for p in loaded.metrics_dir.iterdir()
    ):
        assert time.monotonic() < deadline, "child_exit did not mark the dead worker"
        time.sleep(0.2)
    while call("GET", loaded.url + "/health/ready")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    after = scrape(loaded.url)
    for labels in (
        {"endpoint": "/predict", "method": "POST", "status": "200"},
        {"endpoint": "/predict", "method": "POST", "status": "415"},
    ):
        assert value(after, "http_requests_total", **labels) == value(
            before, "http_requests_total", **labels
        )
    inner = {"model": "circles", "version": "1", "label": "inner"}
    assert value(after, "predictions_total", **inner) == 10 * loaded.rounds
    for model in ("blobs", "circles", "digits", "fashion-mnist"):
        assert value(after, "model_loaded", model=model, version="1") == 1
    assert (loaded.metrics_dir / f"counter_{victim}.db").exists()  # counts outlive the worker
