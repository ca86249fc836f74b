"""Explicit model control and API keys on a real gunicorn with 2 workers: a load reaches
both workers, a worker that is killed comes back in the current state, keys guard every
protocol, and a keys file nobody can use stops the server from starting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from service.keys import digest
from tests.e2e.conftest import call, running_server
from tests.e2e.test_lifecycle import both_workers, logged, worker_pids
from tests.helpers import ROOT
from tests.service.models.test_lifecycle import publish

ADMIN, APP = "ksk_e2e-admin", "ksk_e2e-app"
POINT = json.dumps({"instances": [[0.1, 0.2]]}).encode()
BLOB = json.dumps({"instances": [[0.0, 0.0]]}).encode()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "circles", 1)
    publish(repo, "blobs", 1, source="blobs")
    keys = repo.parent / "keys.txt"
    keys.write_text(f"ops:{digest(ADMIN)}:admin,read,predict\napp:{digest(APP)}:predict\n")
    with running_server(
        tmp_path_factory.mktemp("server"),
        model_repository=str(repo),
        default_model="circles",
        model_control="explicit",
        api_keys_file=str(keys),
    ) as server:
        yield server, repo


def post(server, path: str, body: bytes | None = None, key: str | None = APP):
    return call("POST", server.url + path, body, "application/json", auth(key) if key else None)


def test_keys_guard_every_protocol_on_gunicorn(guarded):
    server, _ = guarded
    for path, body in (
        ("/predict", POINT),
        ("/v1/models/circles:predict", POINT),
        (
            "/v2/models/circles/infer",
            json.dumps(
                {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}
                    ]
                }
            ).encode(),
        ),
    ):
        status, headers, _ = post(server, path, body, key=None)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert post(server, path, body)[0] == 200
    status, _, body = post(server, "/v2/repository/index")
    assert status == 403
    assert "lacks the 'admin' scope" in body["error"]
    assert call("GET", server.url + "/health/ready")[0] == 200
    exposition = call("GET", server.url + "/metrics")[2]
    assert 'api_key_requests_total{endpoint="/predict",key_id="app",status="200"}' in exposition
    assert APP not in exposition
    assert APP not in server.log_path.read_text()


def test_explicit_mode_loads_only_when_told_and_in_both_workers(guarded):
    server, repo = guarded
    publish(repo, "circles", 2)
    time.sleep(2.5)  # well past any check: explicit mode does not poll
    versions = {
        post(server, "/models/circles/predict", POINT)[2]["model"]["version"] for _ in range(20)
    }
    assert versions == {1}
    since = time.time()
    status, _, body = post(server, "/v2/repository/models/circles/load", key=ADMIN)
    assert (status, body) == (200, {})
    loaded = both_workers(server, "loaded model circles v2", since)
    assert max(loaded.values()) - since <= 2.5  # the other worker: within a check (1 s)
    time.sleep(0.3)
    versions = {
        post(server, "/models/circles/predict", POINT)[2]["model"]["version"] for _ in range(20)
    }
    assert versions == {2}


def test_a_killed_worker_comes_back_in_the_current_state(guarded):
    server, _ = guarded
    since = time.time()
    status, _, body = post(server, "/models/blobs/unload", key=ADMIN)
    assert status == 200
    assert body["versions"][0]["status"] == "unloaded"
    both_workers(server, "unloading model blobs v1", since)
    before = set(worker_pids(server))
    os.kill(min(before), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # the replacement is up once it has loaded circles
        fresh = set(worker_pids(server)) - before
        if fresh and fresh <= set(logged(server, "loaded model circles v2", since)):
            break
        assert time.monotonic() < deadline, "no replacement worker came up"
        time.sleep(0.1)
    (replacement,) = fresh
    assert replacement not in logged(server, "loaded model blobs", since)  # blobs stays out
    time.sleep(0.5)
    assert {post(server, "/models/blobs/predict", BLOB)[0] for _ in range(30)} == {404}
    assert {
        post(server, "/models/circles/predict", POINT)[2]["model"]["version"] for _ in range(30)
    } == {2}


def test_gunicorn_refuses_to_start_on_a_keys_file_nobody_can_use(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"app:{APP}:predict\n")  # the key itself, not its sha256
    env = {
        **os.environ,
        "SERVING_API_KEYS_FILE": str(keys),
        "SERVING_BIND": "127.0.0.1:0",
        "SERVING_METRICS_DIR": str(tmp_path / "metrics"),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SERVING_API_KEYS_FILE" in done.stderr
    assert "no valid key" in done.stderr
    assert APP not in done.stderr
