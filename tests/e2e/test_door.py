"""The door against a hostile client, on a real gunicorn: every framing, cost and leak finding
of the attack report (and variants) answered correctly by the one parser; smuggling cases
compared with stock gunicorn's answers to the same bytes; slow readers (slowhttptest -X)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from datetime import datetime

import httptools
import pytest

from tests.e2e.conftest import call, free_port, running_server
from tests.e2e.test_lifecycle import rss_mib, worker_pids
from tests.helpers import ROOT
from tests.service.models.test_lifecycle import publish

READ_TIMEOUT = 3
POINT = b'{"instances": [[0.1, 0.2]]}'
SECRET = "door-secret-key-0123456789"
ECHO_APP = "tests.e2e.echo_app:app"
SLOW_READERS = [  # slowhttptest -X: 200 connections reading a few bytes every 3 s, for 12 s
    *("-X", "-c", "200", "-r", "100", "-w", "10", "-y", "20", "-n", "5", "-z", "32"),
    *("-k", "3", "-l", "12", "-p", "3"),
]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "circles", 1)
    with running_server(
        tmp_path_factory.mktemp("server"),
        model_repository=str(repo),
        default_model="circles",
        read_timeout_s=str(READ_TIMEOUT),
        write_timeout_s="5",
    ) as server:
        yield server


@contextmanager
def stock_gunicorn():
    """gunicorn as it comes (sync worker) serving tests/e2e/echo_app.py: the reference."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1", ECHO_APP],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


class _Responses:
    """Every response on one connection, read by a library parser (llhttp)."""

    def __init__(self, answer: bytes) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)
        with suppress(httptools.HttpParserError):  # (a 100 Continue, a cut-off answer)
            self._parser.feed_data(answer)

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self._parser.get_status_code())
        self.bodies.append(self._body)
        self._body = b""


def exchange(url: str, data: bytes, timeout: float = 10) -> _Responses:
    """Send the bytes, read until the server closes; every response it sent."""
    answer = b""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return _Responses(answer)


def elapsed(function, *args) -> float:
    started = time.monotonic()
    function(*args)
    return time.monotonic() - started


def live(url: str) -> int:
    return call("GET", url + "/health/live")[0]


# --- 4: one parser decides the framing; smuggling fails --------------------------------------

SMUGGLED = b"GET /models HTTP/1.1\r\nHost: t\r\n\r\n"
HEAD = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
FRAMINGS = {
    "TE and CL": HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "CL and TE": HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n",
    "xchunked": HEAD + b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "chunked, identity": HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "identity, chunked": HEAD + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    "two TE fields": HEAD
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "TE on HTTP/1.0": b"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE with a tab": HEAD + b"Transfer-Encoding:\tchunked\x0b\r\n\r\n0\r\n\r\n",
    "two CL fields": HEAD + b"Content-Length: 0\r\nContent-Length: 34\r\n\r\n",
    "CL with a sign": HEAD + b"Content-Length: +0\r\n\r\n",
    "bad chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n",
    "chunk size with space": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0 \r\n\r\n",
    "bare LF chunk": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\n\n",
    "CL in trailer": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 34\r\n\r\n",
}


def test_framing_tricks_are_refused_once_and_the_rest_never_runs(target):
    with stock_gunicorn() as stock:
        for name, request in FRAMINGS.items():
            ours = exchange(target.url, request + SMUGGLED)
            theirs = exchange(stock, request + SMUGGLED)
            # Refused (400, or 501 for a coding it does not implement), and the connection
            # closed: the smuggled request after it gets no answer.
            assert len(ours.statuses) == 1, (name, ours.statuses)
            assert ours.statuses[0] in (400, 501), (name, ours.statuses)
            assert json.loads(ours.bodies[0])["error"]["code"] in ("bad_request", "not_implemented")
            # Wherever stock gunicorn refuses, so does the service; where stock gunicorn
            # answers the smuggled request too, the service does not.
            if theirs.statuses and theirs.statuses[0] >= 400:
                assert ours.statuses[0] >= 400, name
            assert len(ours.statuses) <= max(len(theirs.statuses), 1), name


def test_a_smuggled_request_never_runs_with_the_next_clients_key(target):
    """Behind a proxy that frames by Content-Length, the bytes after a refused request are
    where an attacker puts a request for the next client; none of them is ever read."""
    request = HEAD + b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    victim = b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-API-Key: " + SECRET.encode() + b"\r\n\r\n"
    responses = exchange(target.url, request + SMUGGLED + victim)
    assert len(responses.statuses) == 1


@pytest.mark.parametrize("padding", [b" " * 20, b"\t\t", b" \t "], ids=["spaces", "tabs", "mixed"])
def test_a_padded_content_length_is_read_as_its_number(target, padding):
    for length in (b"27", b"0027", b"000000000000027"):
        request = (
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + length + padding + b"\r\n\r\n" + POINT
        )
        responses = exchange(target.url, request)
        assert responses.statuses == [200], (length, padding)
        assert json.loads(responses.bodies[0])["predictions"][0]["label"]


def test_a_padded_length_whose_body_never_comes_holds_up_nobody(target):
    stalled = []
    for _ in range(8):  # more than the workers
        sock = socket.create_connection(address(target.url))
        sock.sendall(
            b"GET /health/live HTTP/1.1\r\nHost: t\r\nContent-Length: 5" + b" " * 20 + b"\r\n\r\n"
        )
        stalled.append(sock)
    try:
        for _ in range(10):
            assert elapsed(live, target.url) < 1.0
        time.sleep(READ_TIMEOUT + 1.5)
        for sock in stalled:  # and each stalled one got its 408 in time
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in stalled:
            sock.close()


# --- 5, 6: memory bounded by the work; the receive budget never locks small requests out -----


def test_one_byte_chunks_cost_about_their_bytes_in_worker_memory(target):
    size = 3 * 1024 * 1024
    before = {pid: rss_mib(pid) for pid in worker_pids(target)}
    sockets = []
    for _ in range(2):  # one each for both workers, most likely
        sock = socket.create_connection(address(target.url))
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"1\r\nx\r\n" * size)  # and never the last chunk
        sockets.append(sock)
    try:
        time.sleep(1.0)
        assert live(target.url) == 200
        grown = sum(max(rss_mib(pid) - before[pid], 0) for pid in before)
        # 2 uploads x 3 MiB held: at most 2x that in the workers (the finding: ~75x).
        assert grown < 2 * 2 * 3 + 8, grown
    finally:
        for sock in sockets:
            sock.close()


def test_uploads_filling_the_receive_budget_never_lock_small_requests_out(tmp_path):
    repo, workdir = tmp_path / "repo", tmp_path / "server"
    repo.mkdir()
    workdir.mkdir()
    publish(repo, "circles", 1)
    with running_server(
        workdir,
        model_repository=str(repo),
        default_model="circles",
        read_timeout_s="20",
        max_body_bytes=str(16 * 1024 * 1024),
        workers="1",
    ) as server:
        sockets, refused = [], 0
        try:
            for _ in range(10):  # 10 x 15 MiB > the worker's 128 MiB budget
                sock = socket.create_connection(address(server.url))
                sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % (16 * 1024 * 1024))
                try:
                    sock.sendall(b" " * (15 * 1024 * 1024))
                except OSError:
                    refused += 1
                sockets.append(sock)
                assert elapsed(live, server.url) < 1.0
            time.sleep(0.5)
            for _ in range(5):
                assert elapsed(live, server.url) < 1.0  # small requests always get in
            answers = []
            for sock in sockets:
                sock.settimeout(0.5)
                try:
                    answers.append(sock.recv(200))
                except (TimeoutError, OSError):
                    answers.append(b"")
            shed = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
            assert 1 <= len(shed) + refused < 10  # the largest refused, not everyone
        finally:
            for sock in sockets:
                sock.close()


# --- 7: no key in any log line or error body ---------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /models HTTP/1.1\r\nHost: t\r\nX-API-Key " + SECRET.encode() + b"\r\n\r\n",
        b"GET /models\x01" + SECRET.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /models HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode() + b"\x01\r\n\r\n",
        b"GET /models?key=" + SECRET.encode() + b"\x7f HTTP/1.1\r\n\r\n",
        b"GET /models HTTP/1.1\r\nX-API-Key: " + SECRET.encode() + b"\r\nX: " + b"a" * 9000,
    ],
    ids=["no-colon", "control-in-line", "control-in-header", "control-in-query", "too-long"],
)
def test_a_malformed_request_never_logs_or_echoes_its_key(target, request_bytes):
    responses = exchange(target.url, request_bytes + b"\r\n\r\n")
    assert responses.statuses[:1] in ([400], [414], [431])
    assert SECRET.encode() not in b"".join(responses.bodies)
    time.sleep(0.2)
    assert SECRET not in target.log_path.read_text()


# --- 8: Expect: 100-continue ---------------------------------------------------------------------


def _continues(url: str, version: bytes) -> bytes:
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(
            b"POST /predict " + version + b"\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(POINT)
        )
        time.sleep(0.3)
        sock.sendall(POINT)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_100_continue_is_sent_once_and_never_to_http_1_0(target):
    one_one = _continues(target.url, b"HTTP/1.1")
    assert one_one.count(b"100 Continue") == 1
    assert one_one.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    one_zero = _continues(target.url, b"HTTP/1.0")
    assert b"100 Continue" not in one_zero
    assert one_zero.startswith(b"HTTP/1.1 200 OK\r\n")


# --- 10: slow readers -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("slowhttptest") is None, reason="slowhttptest not installed")
def test_slow_readers_leave_normal_requests_answered_within_a_second(target, tmp_path):
    """slowhttptest -X: 200 connections that ask for the OpenAPI document and read it a few
    bytes at a time, for 12 s; meanwhile every normal request is answered in under 1 s."""
    slow = subprocess.Popen(
        ["slowhttptest", *SLOW_READERS, "-u", target.url + "/openapi.json"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    times: list[float] = []

    def probe() -> None:
        while slow.poll() is None and len(times) < 200:
            times.append(elapsed(live, target.url))
            time.sleep(0.2)

    try:
        time.sleep(3)  # the slow readers connect and start reading
        prober = threading.Thread(target=probe)
        prober.start()
        prober.join(timeout=30)
    finally:
        slow.kill()
        slow.wait()
    assert len(times) >= 20
    assert max(times) < 1.0, sorted(times)[-5:]


# --- 2, 9: images cost what the cap allows; only the allowed formats are opened ----------------


def test_thousands_of_tiny_images_are_refused_at_once_in_every_protocol(target, tmp_path):
    import base64

    import numpy as np

    from tests.helpers import image_bytes

    tiny = base64.b64encode(image_bytes(np.zeros((2, 2, 3), np.uint8))).decode()
    v2 = json.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [4096], "data": [tiny] * 4096}]}
    ).encode()
    native = json.dumps({"model": "fashion", "images": [tiny] * 4096}).encode()
    tfs = json.dumps({"instances": [{"b64": tiny}] * 4096}).encode()
    with running_server(
        tmp_path, model_repository=str(_fashion_repo(tmp_path)), default_model="fashion"
    ) as server:
        for path, body in (
            ("/v2/models/fashion/infer", v2),
            ("/predict", native),
            ("/v1/models/fashion:predict", tfs),
        ):
            started = time.monotonic()
            status, _, answer = call("POST", server.url + path, body, "application/json")
            assert time.monotonic() - started < 2.0, path
            assert status in (400, 422), (path, status)
            assert "SERVING_MAX_IMAGES" in json.dumps(answer), path
        assert live(server.url) == 200
        # An EPS file is refused by name: Pillow opens only the allowed formats, so nothing
        # reaches Ghostscript.
        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath showpage\n"
        status, _, body = call("POST", server.url + "/predict", eps, "image/png")
        assert status == 400, status  # invalid_image
        assert "PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or HEIC" in body["error"]["message"]


def _fashion_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    publish(repo, "fashion", 1, source="fashion-mnist")
    return repo


# --- the second review: pipelining, half-closes, upgrades, graceful stops, descriptors -----------

LIVE = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"


def test_pipelined_requests_then_a_half_close_are_all_answered(target):
    responses = exchange(target.url, LIVE * 5)  # (exchange half-closes after sending)
    assert responses.statuses == [200] * 5
    assert all(json.loads(body) == {"status": "alive"} for body in responses.bodies)


def test_whole_requests_are_answered_before_the_garbage_after_them(target):
    assert exchange(target.url, LIVE * 2 + b"BLAH\r\n\r\n").statuses == [200, 200, 400]
    closing = b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    assert exchange(target.url, closing + LIVE).statuses == [200]  # the rest is not read
    assert exchange(target.url, b"GET /health/live HTTP/1.0\r\n\r\n" + LIVE).statuses == [200]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: %d\r\n\r\n%s" % (len(POINT), POINT),
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(POINT), POINT),
    ],
    ids=["content-length", "chunked"],
)
def test_a_post_asking_for_h2c_is_served_over_http_1_1_with_its_body(target, framing):
    """What `curl --http2` sends on http://: the upgrade is ignored, the body read."""
    request = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n" + framing
    )
    responses = exchange(target.url, request)
    assert responses.statuses == [200]
    assert json.loads(responses.bodies[0])["predictions"][0]["label"]


def test_a_graceful_stop_answers_what_arrived_refuses_new_clients_and_beats_the_kill(tmp_path):
    repo, workdir = tmp_path / "repo", tmp_path / "server"
    repo.mkdir()
    workdir.mkdir()
    publish(repo, "circles", 1)
    with running_server(
        workdir,
        model_repository=str(repo),
        default_model="circles",
        workers="1",
        graceful_timeout="3",
        read_timeout_s="30",
    ) as server:
        kept_alive = socket.create_connection(address(server.url), timeout=10)
        kept_alive.sendall(LIVE)
        assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200 ")
        stalled = socket.create_connection(address(server.url), timeout=10)
        stalled.sendall(HEAD + b"Content-Length: 100\r\n\r\n{")  # never finished
        time.sleep(0.3)
        started = time.monotonic()
        kept_alive.sendall(LIVE * 2)  # arrives as the stop begins
        server.process.terminate()
        answer = b""
        while chunk := kept_alive.recv(65536):
            answer += chunk
        assert _Responses(answer).statuses == [200, 200]
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address(server.url), timeout=2)
        assert server.process.wait(timeout=10) == 0
        # The stalled upload held the worker until 90% of graceful_timeout, then it left on
        # its own: the arbiter never had to kill it, so worker_exit ran.
        assert time.monotonic() - started < 3.0 + 2.0  # (and the master's own exit)
        times = {
            line["message"].split(" (")[0]: datetime.fromisoformat(line["time"])
            for line in server.log_lines()
        }
        took = (times["Worker exiting"] - times["Handling signal: term"]).total_seconds()
        assert 2.0 < took < 3.0
        assert "SIGKILL" not in server.log_path.read_text()
        kept_alive.close()
        stalled.close()


def test_running_out_of_descriptors_pauses_accepting_and_keeps_the_worker(tmp_path):
    import resource

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    repo, workdir = tmp_path / "repo", tmp_path / "server"
    repo.mkdir()
    workdir.mkdir()
    publish(repo, "circles", 1)
    with running_server(
        workdir,
        preexec=few_descriptors,
        model_repository=str(repo),
        default_model="circles",
        workers="1",
    ) as server:
        (worker,) = worker_pids(server)
        clients = []
        try:
            for _ in range(120):  # more than the worker has descriptors for
                clients.append(socket.create_connection(address(server.url), timeout=5))
            time.sleep(1.0)
            for sock in clients[:20]:
                sock.close()
            del clients[:20]
            time.sleep(1.0)  # the pause is over: accepting again
            assert worker_pids(server) == [worker]  # the same worker, never crashed
        finally:
            for sock in clients:
                sock.close()
        assert live(server.url) == 200
        assert worker_pids(server) == [worker]
        assert "pausing accept" in server.log_path.read_text()
