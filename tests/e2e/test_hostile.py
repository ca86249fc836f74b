"""A hostile client on loopback, against a real gunicorn: every finding of the attack report
(and variants) answered correctly, schemathesis over /openapi.json, a bounded soak, a worker
killed under load, two instances side by side, and broken metrics storage."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import socket
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import call, running_server
from tests.e2e.test_lifecycle import rss_mib, worker_pids
from tests.helpers import ROOT, image_bytes, png_header_only
from tests.service.models.test_lifecycle import publish

READ_TIMEOUT = 3  # SERVING_READ_TIMEOUT_S for the target
POINT = {"instances": [[0.1, 0.2]]}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "circles", 1)
    publish(repo, "fashion", 1, source="fashion-mnist")
    (repo / "circles" / "serving.json").write_text('{"labels": {"stable": 1}}')
    with running_server(
        tmp_path_factory.mktemp("server"),
        model_repository=str(repo),
        default_model="circles",
        read_timeout_s=str(READ_TIMEOUT),
    ) as server:
        yield server


def raw(server, data: bytes, timeout: float = 15) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; (status, headers, body) of the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer:
        raise ConnectionResetError("the connection closed without an answer")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def post(path: str, body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\nConnection: close\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def assert_json_error(status, headers, body, expected: int) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json")
    rid = headers["x-request-id"]
    document = json.loads(body)
    assert "error" in document
    if isinstance(document["error"], dict):  # the native shape carries it in the body too
        assert document["request_id"] == rid
    return document


BAD_BODIES = [
    ("/predict", b'{"images": [1]}', 422),
    ("/predict", b'{"instances": [null]}', 422),
    ("/predict", b'{"images": [null, 2], "version": 1}', 422),
    ("/predict", b'{"instances": [[1e308, 1]]}', 422),
    ("/predict", b'{"instances": [[-3.4e39, 0]]}', 422),
    ("/predict", b'{"instances": [[1' + b"0" * 400 + b", 1]]}", 400),
    ("/predict", b"[" * 3000 + b"]" * 3000, 400),
    ("/predict", b'{"instances": [[NaN, 1]]}', 400),
    ("/predict", b'{"instances": [[1, 2]], "version": 1.5}', 422),
    ("/predict", b'{"instances": [[1, 2]], "version": "x y"}', 422),
    ("/models/circles/versions/0/predict", b'{"instances": [[1, 1]]}', 404),
    ("/models/circles/versions/01/predict", b'{"instances": [[1, 1]]}', 404),
    ("/models/circles/versions/%C2%B2/predict", b'{"instances": [[1, 1]]}', 404),
    ("/models/circles/versions/1/predict", b'{"instances": [[1, 1]], "version": 7}', 422),
    (
        "/v2/models/circles/infer",
        b'{"inputs": [{"name": "input", "datatype": "FP32", '
        b'"shape": [1, 2], "data": [1' + b"0" * 400 + b", 1]}]}",
        400,
    ),
    ("/v2/models/circles/infer", b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400),
    (
        "/v2/models/circles/infer",
        b'{"inputs": [{"name": "input", "datatype": "FP32", '
        b'"shape": [1, 2], "data": [3.4e38, 3.4e39]}]}',
        400,
    ),
    ("/v1/models/circles:predict", b'{"instances": [[1e308, 1]]}', 400),
    ("/v1/models/circles:predict", b'{"instances": [[1, 2]]' + b"}" * 5, 400),
    ("/v1/models/circles:predict", b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),
    ("/predict?model=fashion", b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}", 422),
]


@pytest.mark.parametrize(("path", "body", "expected"), BAD_BODIES)
def test_bad_bodies_get_a_json_4xx_with_a_request_id(target, path, body, expected):
    assert_json_error(*raw(target, post(path, body)), expected)


def test_multipart_parts_without_a_field_name_are_refused(target):
    png = image_bytes(np.zeros((28, 28), np.uint8))
    for disposition in ('form-data; filename="a.png"', "form-data", "attachment"):
        body = (
            b"--XX\r\nContent-Disposition: "
            + disposition.encode()
            + b"\r\nContent-Type: image/png\r\n\r\n"
            + png
            + b"\r\n--XX--\r\n"
        )
        document = assert_json_error(
            *raw(target, post("/predict?model=fashion", body, "multipart/form-data; boundary=XX")),
            400,
        )
        assert "field name" in document["error"]["message"]


def test_chunked_bodies_above_the_limit_or_badly_framed(target):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    big = (b"100000\r\n" + b" " * 0x100000 + b"\r\n") * 9 + b"0\r\n\r\n"
    assert_json_error(*raw(target, head + big), 413)
    assert_json_error(*raw(target, head + b"ZZ\r\nabc\r\n0\r\n\r\n"), 400)


def test_the_servers_own_errors_are_json_and_counted(target):
    before = call("GET", target.url + "/metrics")[2]
    assert_json_error(*raw(target, b"GARBAGE\r\n\r\n"), 400)
    assert_json_error(*raw(target, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"), 414)
    assert_json_error(
        *raw(target, b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 10000 + b"\r\n\r\n"), 431
    )
    after = call("GET", target.url + "/metrics")[2]

    def count(text, status):
        line = f'http_requests_total{{endpoint="(http)",method="other",status="{status}"}}'
        found = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line)]
        return found[0] if found else 0.0

    assert [count(after, s) - count(before, s) for s in (400, 414, 431)] == [1, 1, 1]


def test_unknown_methods_and_paths_share_one_label(target):
    rng = random.Random(0)
    known = ["PROPFIND", "PURGE", "MKCOL", "LOCK", "REPORT", "SEARCH", "LINK", "UNLINK"]
    for i in range(300):
        # Methods llhttp does not know are refused by the parser (400); registered methods
        # no route takes reach the route table (404 or 405).
        invented = i % 2 == 0
        method = "".join(rng.choices(string.ascii_uppercase, k=8)) if invented else known[i % 8]
        path = "/" + "".join(rng.choices(string.ascii_lowercase, k=12))
        status, _, body = raw(
            target, f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 400 if invented else status in (404, 405), (method, status)
        assert json.loads(body)["error"]
    exposition = call("GET", target.url + "/metrics")[2]
    methods = {
        line.split('method="')[1].split('"')[0]
        for line in exposition.splitlines()
        if line.startswith("http_requests_total{")
    }
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    endpoints = {
        line.split('endpoint="')[1].split('"')[0]
        for line in exposition.splitlines()
        if line.startswith("http_requests_total{")
    }
    assert len(endpoints) < 60  # route templates, "unmatched" and "(http)": not 300 paths


def test_stalled_and_idle_clients_do_not_starve_the_others(target):
    host, port = target.url.removeprefix("http://").split(":")
    stalled = []
    for i in range(60):
        sock = socket.create_connection((host, int(port)))
        if i % 6 == 0:  # headers promise a body that never comes
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{")
        elif i % 6 == 1:  # half the headers
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        elif i % 6 == 2:  # a request answered, then the start of a pipelined one
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\nGET /hea")
        elif i % 6 == 3:  # answered and closed by the server, kept open (and unread) here
            sock.sendall(b"GARBAGE\r\n\r\n")
        elif i % 6 == 4:  # a chunked body trickling in
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
            )
        stalled.append(sock)  # the rest: connected and silent
    idle = [socket.create_connection((host, int(port))) for _ in range(150)]
    time.sleep(0.5)
    started = time.perf_counter()
    status, _, _body = call(
        "POST", target.url + "/predict", json.dumps(POINT).encode(), "application/json"
    )
    assert status == 200
    assert time.perf_counter() - started < 1.0
    stalled[0].settimeout(READ_TIMEOUT + 10)
    answer = stalled[0].recv(65536)  # the half-sent request, once its time is up
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in answer
    for sock in stalled + idle:
        sock.close()


def test_a_body_above_the_limit_is_refused_before_it_is_sent(target):
    host, port = target.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n")
        answer = sock.recv(65536)  # at once: no thread waits for 100 MB that never come
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"payload_too_large"' in answer


def test_huge_or_absurdly_shaped_images_cost_little(target):
    for shape in ((1, 16_000_000), (16_000_000, 1)):
        png = png_header_only(shape[1], shape[0])
        document = assert_json_error(
            *raw(target, post("/predict?model=fashion", png, "image/png")), 413
        )
        assert document["error"]["code"] == "image_too_large"
    pids = worker_pids(target)
    before = {pid: rss_mib(pid) for pid in pids}
    # 16 megapixels (the limit) in a PNG that fits the body limit: a gradient compresses
    picture = np.add.outer(np.arange(4000), np.arange(4000)).astype(np.uint8)
    status, _, _body = raw(
        target, post("/predict?model=fashion", image_bytes(picture), "image/png"), timeout=60
    )
    assert status == 200
    grown = max(rss_mib(pid) - before[pid] for pid in pids)
    assert grown < 200, grown


def test_a_soak_of_good_and_bad_requests_has_no_5xx_and_no_growth(target):
    seconds = 60
    bodies = [
        (b"/predict", json.dumps(POINT).encode(), 200),
        (b"/predict?model=fashion", json.dumps({"instances": [[[0] * 28] * 28]}).encode(), 200),
        (b"/predict", b'{"instances": [null]}', 422),
        (b"/predict", b'{"instances": [[1' + b"0" * 40 + b", 1]]}", 400),
        (b"/predict", b"not json", 400),
        (b"/nowhere", b"{}", 404),
    ]
    warm = time.monotonic() + 5
    statuses: Counter = Counter()
    stop = threading.Event()

    def client():
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            path, body, _ = rng.choice(bodies)
            try:
                status, _, _ = raw(target, post(path.decode(), body))
            except OSError:
                status = "connection error"
            statuses[status] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(64)]
    for thread in threads:
        thread.start()
    while time.monotonic() < warm:
        time.sleep(0.1)
    pids = worker_pids(target)
    before = {pid: rss_mib(pid) for pid in pids}
    time.sleep(seconds - 5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    after = {pid: rss_mib(pid) for pid in pids}
    assert sum(statuses.values()) > 1000
    assert not [s for s in statuses if not isinstance(s, int) or s >= 500], statuses
    assert set(statuses) <= {200, 400, 404, 422}, statuses
    for pid in pids:
        assert after[pid] <= before[pid] * 1.05, (before, after)


def test_a_worker_killed_under_load_loses_only_its_requests_in_flight(target):
    failures, successes, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, _, _ = raw(target, post("/predict", json.dumps(POINT).encode()))
                (successes if status == 200 else failures).append((time.time(), status))
            except OSError as exc:
                failures.append((time.time(), repr(exc)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    killed_at = time.time()
    os.kill(min(worker_pids(target)), 9)
    time.sleep(3.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(failures) <= len(threads), failures  # at most one in flight per client
    assert all(when < killed_at + 1.0 for when, _ in failures), failures
    assert sum(1 for when, _ in successes if when > killed_at + 1.0) > 50


def test_two_instances_side_by_side_keep_their_own_counts(tmp_path):
    counts = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_server(tmp_path / "a", metrics_dir="") as a,
        running_server(tmp_path / "b", metrics_dir="") as b,
    ):
        for server, n in ((a, 3), (b, 5)):
            for _ in range(n):
                call(
                    "POST",
                    server.url + "/predict?model=circles",
                    json.dumps(POINT).encode(),
                    "application/json",
                )
        for server in (a, b):
            exposition = call("GET", server.url + "/metrics")[2]
            line = next(
                x
                for x in exposition.splitlines()
                if x.startswith(
                    'http_requests_total{endpoint="/predict",method="POST",status="200"}'
                )
            )
            counts.append(float(line.rsplit(" ", 1)[1]))
    assert counts == [3, 5]


def test_a_second_instance_on_a_claimed_metrics_folder_refuses_to_start(tmp_path):
    shared = tmp_path / "shared"
    (tmp_path / "a").mkdir()
    with running_server(tmp_path / "a", metrics_dir=str(shared)) as first:
        env = {**os.environ, "SERVING_METRICS_DIR": str(shared), "SERVING_BIND": "127.0.0.1:0"}
        done = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert "in use by another running instance" in done.stderr
        assert call("GET", first.url + "/health/ready")[0] == 200
        assert any(shared.glob("*.db"))  # the first instance's files are untouched


def _fill_metrics(server) -> None:
    """Distinct (endpoint, method, status) label sets: the metrics files grow."""
    for path in (
        "/predict",
        "/models",
        "/models/circles",
        "/v2",
        "/v2/models/circles",
        "/v1/models/circles",
        "/v2/models/circles/ready",
        "/models/nope",
        "/v2/models/nope",
        "/v1/models/nope",
        "/health/live",
        "/openapi.json",
        "/v2/models/circles/stats",
        "/v2/models/stats",
        "/v2/health/ready",
    ):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            raw(
                server,
                f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                "Content-Length: 0\r\n\r\n".encode(),
            )


@pytest.mark.parametrize("broken", ["unwritable", "full"])
def test_broken_metrics_storage_costs_the_metrics_not_the_predictions(tmp_path, broken):
    if broken == "unwritable":
        settings, limit = {"metrics_dir": "/proc/keras-serving-metrics"}, None
    else:  # files may not grow past 200 KB: like a disk that fills up as the service runs
        settings = {"metrics_dir": str(tmp_path / "metrics")}

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server", preexec=limit, **settings) as server:
        pids = worker_pids(server)
        _fill_metrics(server)
        for _ in range(20):
            status, _, body = call(
                "POST",
                server.url + "/predict?model=circles",
                json.dumps(POINT).encode(),
                "application/json",
            )
            assert status == 200
        for _ in range(8):  # whichever worker answers: the sums are incomplete everywhere
            status, _, body = call("GET", server.url + "/metrics")
            assert status == 503
            assert "metrics unavailable" in body["error"]["message"]
        status, _, ready = call("GET", server.url + "/health/ready")
        assert status == 200
        assert "metrics unavailable" in ready["reason"]
        assert worker_pids(server) == pids  # no worker died on the way
        assert server.process.poll() is None


def test_the_metrics_files_reserve_their_space(tmp_path):
    """A growing metrics file is allocated on disk (posix_fallocate), not a sparse hole a
    full disk turns into SIGBUS."""
    code = (
        "from service import metrics; "
        "[metrics.HTTP_REQUESTS.labels(f'/e{i}', 'GET', '200').inc() for i in range(3000)]"
    )
    folder = tmp_path / "mp"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    (counter,) = folder.glob("counter_*.db")
    st = counter.stat()
    assert st.st_size > 1 << 16  # it grew
    assert st.st_blocks * 512 >= st.st_size  # and every byte of it is allocated
    shutil.rmtree(folder)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    """Every check but positive_data_acceptance: a body can match the schema and still not be
    a valid image or vector for the model (its shape is the model's), which is a 4xx."""
    repo = tmp_path / "repo"
    repo.mkdir()
    publish(repo, "circles", 1)
    (repo / "circles" / "serving.json").write_text('{"labels": {"stable": 1}}')
    (tmp_path / "server").mkdir()
    with running_server(
        tmp_path / "server", model_repository=str(repo), default_model="circles"
    ) as server:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(ROOT / "tests" / "data" / "schemathesis.toml"),
                "run",
                server.url + "/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "20",
                "--generation-deterministic",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        summary = done.stdout[-3000:]
        assert done.returncode == 0, summary
        assert " passed" in summary
        assert "failure" not in summary.lower().split("summary")[-1]
        assert server.process.poll() is None


def test_every_log_line_is_one_json_object(target):
    lines = target.log_path.read_text().split("\n")[:-1]  # whole lines: one may be half written
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line[:200]
    providers = [json.loads(x) for x in lines if "CUDAExecutionProvider not used" in x]
    assert providers  # where CUDA's libraries are missing, one line per worker says so


def test_a_hup_reload_keeps_the_counts(tmp_path):
    import signal

    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server", default_model="circles") as server:
        for _ in range(4):
            call("POST", server.url + "/predict", json.dumps(POINT).encode(), "application/json")
        before = set(worker_pids(server))
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while set(worker_pids(server)) & before or len(worker_pids(server)) < 2:
            assert time.monotonic() < deadline, "the workers were not replaced"
            time.sleep(0.2)
        while call("GET", server.url + "/health/ready")[0] != 200:
            time.sleep(0.2)
        exposition = call("GET", server.url + "/metrics")[2]
        line = next(
            x
            for x in exposition.splitlines()
            if x.startswith('http_requests_total{endpoint="/predict",method="POST",status="200"}')
        )
        assert float(line.rsplit(" ", 1)[1]) == 4
