"""Live model lifecycle on a real gunicorn with 2 workers, polling a scratch repository.

Which worker did what is read from the service's own JSON log lines (each carries its
pid): a change has reached "both workers" when two different pids logged it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import call, running_server
from tests.service.models.test_lifecycle import publish, serving_json

INTERVAL = 0.5  # SERVING_POLL_INTERVAL_S for this server
POINT = json.dumps({"instances": [[0.1, 0.2]]}).encode()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "circles", 1)  # the default model
    with running_server(
        tmp_path_factory.mktemp("server"),
        model_repository=str(repo),
        default_model="circles",
        poll_interval_s=str(INTERVAL),
        max_body_bytes=str(64 << 20),
    ) as server:
        yield server, repo


def logged(server, text: str, since: float) -> dict[int, float]:
    """pid -> time (epoch seconds) of the first log line containing ``text`` after ``since``."""
    found: dict[int, float] = {}
    for line in server.log_lines():
        when = datetime.fromisoformat(line["time"]).timestamp()
        if when >= since and text in line.get("message", "") and line["pid"] not in found:
            found[line["pid"]] = when
    return found


def both_workers(server, text: str, since: float, timeout: float = 30.0) -> dict[int, float]:
    """Wait until two worker pids have logged ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = logged(server, text, since)
        if len(found) >= 2:
            return found
        time.sleep(0.05)
    pytest.fail(f"not logged by both workers within {timeout} s: {text!r}: {found}")


def predict(url: str, body: bytes = POINT) -> tuple[int, dict]:
    status, _, answer = call("POST", url, body, "application/json")
    return status, answer


class Load(threading.Thread):
    """A bounded load generator: one request after another, each outcome kept."""

    def __init__(self, url: str, body: bytes = POINT) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.results, self.stop = url, body, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.time()
            try:
                status, body = predict(self.url, self.body)
                version = body.get("model", {}).get("version") if status == 200 else None
            except OSError as exc:  # a refused or reset connection is a failure too
                status, version = repr(exc), None
            self.results.append((started, status, version))

    def finish(self) -> list[tuple[float, object, int | None]]:
        self.stop.set()
        self.join(timeout=30)
        return self.results


def test_a_published_version_reaches_both_workers_without_a_failed_request(live):
    server, repo = live
    publish(repo, "rollout", 1)
    both_workers(server, "loaded model rollout v1", 0)
    loads = [Load(f"{server.url}/models/rollout/predict") for _ in range(2)]
    for load in loads:
        load.start()
    time.sleep(1.0)
    published = time.time()
    publish(repo, "rollout", 2)
    loaded = both_workers(server, "loaded model rollout v2", published)
    time.sleep(1.0)
    results = [r for load in loads for r in load.finish()]
    assert max(loaded.values()) - published <= 2 * INTERVAL + 0.5
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:5]
    # the log line comes just before the swap: allow it a moment
    after = [version for started, _, version in results if started > max(loaded.values()) + 0.25]
    before = [version for started, _, version in results if started < published]
    assert len(results) > 100
    assert before
    assert after
    assert set(before) == {1}
    assert set(after) == {2}


def in_progress(server, endpoint: str) -> float:
    """Requests on a route template that a worker is handling now (from /metrics)."""
    for line in call("GET", f"{server.url}/metrics")[2].splitlines():
        if line.startswith("http_requests_in_progress{") and f'endpoint="{endpoint}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_removed_version_finishes_in_flight_requests_then_leaves_both_workers(live):
    server, repo = live
    for version in (1, 2):  # Fashion-MNIST v2: mirror-averaged, so a big batch takes a while
        publish(repo, "removal", version, source="fashion-mnist", source_version=2)
    both_workers(server, "loaded model removal v2", 0)
    # V2 resolves the version first, then reads the tensor: once the request is in a worker,
    # it holds version 1. A binary tensor: no JSON to parse, all the time goes to inference.
    images = np.random.default_rng(0).random((4000, 28, 28, 1), dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(images.shape),
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ],
            "outputs": [{"name": "label"}],
        }
    ).encode()
    endpoint = "/v2/models/{model}/versions/{version}/infer"
    answers = []

    def slow_request():
        status, _, body = call(
            "POST",
            f"{server.url}/v2/models/removal/versions/1/infer",
            header + images.tobytes(),
            "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(header))},
        )
        answers.append((status, body, time.time()))

    slow = threading.Thread(target=slow_request)
    slow.start()
    deadline = time.monotonic() + 20
    while in_progress(server, endpoint) < 1:  # the whole body is in: the app is on it
        assert time.monotonic() < deadline, "the request never reached a worker"
        time.sleep(0.02)
    removed = time.time()
    shutil.rmtree(repo / "removal" / "1")
    gone = both_workers(server, "unloading model removal v1", removed)
    slow.join(timeout=60)
    ((status, body, answered),) = answers
    assert status == 200, body
    assert body["model_version"] == "1"  # the in-flight request finished on version 1
    assert body["outputs"][0]["shape"] == [4000]
    assert max(gone.values()) - removed <= 2 * INTERVAL + 0.5
    assert min(gone.values()) < answered  # it left while the request was still running
    for _ in range(10):  # new requests: gone from both workers
        assert predict(f"{server.url}/models/removal/versions/1/predict")[0] == 404
    released = both_workers(server, "released model removal v1", removed)
    assert len(released) == 2


def test_a_corrupt_version_is_reported_and_the_serving_one_keeps_serving(live):
    server, repo = live
    publish(repo, "broken", 1)
    both_workers(server, "loaded model broken v1", 0)
    since = time.time()

    def corrupt(meta, folder):
        (folder / "model.onnx").write_bytes(b"\x08\x07 not a model")

    publish(repo, "broken", 2, edit=corrupt)
    both_workers(server, "model broken v2 failed to load", since)
    for _ in range(10):
        status, body = predict(f"{server.url}/models/broken/predict")
        assert (status, body["model"]["version"]) == (200, 1)
    status, _, model = call("GET", f"{server.url}/models/broken")
    assert [v["status"] for v in model["versions"]] == ["loaded", "failed"]
    status, _, ready = call("GET", f"{server.url}/health/ready")
    assert status == 200
    assert "failed to load: broken v2" in ready["reason"]
    status, _, exposition = call("GET", f"{server.url}/metrics")
    assert 'model_load_failures_total{model="broken",version="2"} 2.0' in exposition


def test_labels_and_weights_route_as_configured(live):
    server, repo = live
    for version in (1, 2):
        publish(repo, "canary", version)
    both_workers(server, "loaded model canary v2", 0)
    since = time.time()
    serving_json(
        repo,
        "canary",
        {"labels": {"stable": 1, "canary": 2}, "weights": {"stable": 0.8, "canary": 0.2}},
    )
    both_workers(server, "model canary: serving.json", since)
    seen = Counter(
        predict(f"{server.url}/models/canary/predict")[1]["model"]["version"] for _ in range(2000)
    )
    assert abs(seen[2] / 2000 - 0.2) < 0.03, seen
    assert predict(f"{server.url}/models/canary/predict?version=stable")[1]["model"]["version"] == 1
    status, _, body = call(
        "POST", f"{server.url}/v1/models/canary/labels/canary:predict", POINT, "application/json"
    )
    assert status == 200
    status, _, body = call(
        "POST",
        f"{server.url}/v2/models/canary/versions/stable/infer",
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}]}
        ).encode(),
        "application/json",
    )
    assert body["model_version"] == "1"
    exposition = call("GET", f"{server.url}/metrics")[2]
    assert 'model_version_weight{model="canary",version="2"} 0.2' in exposition
    counts = "model_request_duration_seconds_count{"
    requests_v2 = [
        line
        for line in exposition.splitlines()
        if line.startswith(counts) and 'model="canary"' in line
    ]
    assert any('version="2"' in line for line in requests_v2)


def test_api_unload_and_load_reach_both_workers(live):
    server, repo = live
    publish(repo, "control", 1, source="blobs")
    both_workers(server, "loaded model control v1", 0)
    since = time.time()
    status, _, body = call("POST", f"{server.url}/models/control/unload")
    assert status == 200
    both_workers(server, "unloading model control v1", since)
    blob = json.dumps({"instances": [[0.0, 0.0]]}).encode()
    assert {predict(f"{server.url}/models/control/predict", blob)[0] for _ in range(20)} == {404}
    since = time.time()
    status, _, body = call("POST", f"{server.url}/v2/repository/models/control/load")
    assert (status, body) == (200, {})
    both_workers(server, "loaded model control v1", since)
    assert {predict(f"{server.url}/models/control/predict", blob)[0] for _ in range(20)} == {200}


def worker_pids(server) -> list[int]:
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _load_and_unload(server, repo, names: list[str]) -> dict[int, float]:
    """Publish Fashion-MNIST copies, run each in both workers, remove them, wait until both
    workers released them; worker RSS (MiB) while they were loaded."""
    since = time.time()
    for name in names:
        publish(repo, name, 1, source="fashion-mnist")
    both_workers(server, f"loaded model {names[-1]} v1", since)
    batch = json.dumps({"instances": np.zeros((8, 28, 28)).tolist()}).encode()
    for name in names:  # each one runs in both workers (activations allocated too)
        for _ in range(6):
            assert predict(f"{server.url}/models/{name}/predict", batch)[0] == 200
    loaded = {pid: rss_mib(pid) for pid in worker_pids(server)}
    since = time.time()
    for name in names:
        shutil.rmtree(repo / name)
    both_workers(server, f"released model {names[-1]} v1", since)
    time.sleep(0.5)
    return loaded


def test_unloaded_sessions_give_their_memory_back(live):
    server, repo = live
    _load_and_unload(server, repo, ["warmup"])  # first-use costs (imports, buffers) paid
    baseline = {pid: rss_mib(pid) for pid in worker_pids(server)}
    loaded = _load_and_unload(server, repo, [f"memory{i}" for i in range(6)])
    after = {pid: rss_mib(pid) for pid in worker_pids(server)}
    for pid, before in baseline.items():
        grown = loaded[pid] - before
        assert grown > 5, (baseline, loaded)  # six sessions did cost memory
        assert after[pid] - before <= 0.25 * grown + 3, (baseline, loaded, after)
