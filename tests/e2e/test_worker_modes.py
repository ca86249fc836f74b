"""The worker answers alike with one thread (its main loop answers, the default) and with a
thread pool: pipelined, kept-alive, concurrent and half-sent requests, on a real gunicorn."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from tests.e2e.conftest import call, running_server

POINT = json.dumps({"instances": [[0.1, 0.2]]}).encode()
PREDICT = (
    b"POST /predict?model=circles HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
    b"\r\nContent-Length: %d\r\n\r\n%s" % (len(POINT), POINT)
)
LIVE = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module", params=["1", "4"], ids=["inline", "thread-pool"])
def target(request, tmp_path_factory):
    with running_server(
        tmp_path_factory.mktemp("server"), threads=request.param, default_model="circles"
    ) as server:
        yield server


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` HTTP responses (each with a Content-Length) off one connection."""
    buffer, answers = b"", []
    while len(answers) < count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].decode("latin-1")
            length = int(
                next(
                    line.split(":", 1)[1]
                    for line in head.split("\r\n")
                    if line.lower().startswith("content-length:")
                )
            )
            if len(buffer) >= end + 4 + length:
                answers.append((int(head.split()[1]), buffer[end + 4 : end + 4 + length]))
                buffer = buffer[end + 4 + length :]
                continue
        chunk = sock.recv(1 << 16)
        assert chunk, f"the connection closed after {len(answers)} of {count} answers"
        buffer += chunk
    return answers


def test_hundreds_of_pipelined_requests_are_answered_in_order(target):
    expected = call("POST", target.url + "/predict?model=circles", POINT, "application/json")[2]
    with _connect(target) as sock:
        sock.sendall((PREDICT + LIVE) * 300)  # one send: answered one after another
        answers = _answers(sock, 600)
    assert [status for status, _ in answers] == [200] * 600
    for i in range(0, 600, 2):
        predicted = json.loads(answers[i][1])
        assert predicted["predictions"] == expected["predictions"]
        assert json.loads(answers[i + 1][1]) == {"status": "alive"}


def test_concurrent_keep_alive_clients_each_get_their_own_answers(target):
    points = [[round(0.01 * i, 2), round(-0.02 * i, 2)] for i in range(16)]
    expected = call(
        "POST",
        target.url + "/predict?model=circles",
        json.dumps({"instances": points}).encode(),
        "application/json",
    )[2]
    failures: list[str] = []

    def client(i: int) -> None:
        body = json.dumps({"instances": [points[i]]}).encode()
        request = PREDICT.replace(b"%d\r\n\r\n" % len(POINT), b"%d\r\n\r\n" % len(body))
        request = request.replace(POINT, body)
        with _connect(target) as sock:
            for _ in range(25):  # one connection, kept alive
                sock.sendall(request)
                ((status, answer),) = _answers(sock, 1)
                if status != 200 or json.loads(answer)["predictions"] != [
                    expected["predictions"][i]
                ]:
                    failures.append(f"client {i}: {status} {answer[:200]!r}")
                    return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures


def test_a_half_sent_request_holds_up_nobody(target):
    expected = call("POST", target.url + "/predict?model=circles", POINT, "application/json")[2]
    with _connect(target) as slow:
        slow.sendall(PREDICT[:-5])  # the body's last bytes still to come
        for _ in range(20):  # meanwhile others are answered, by either worker
            status, _, body = call(
                "POST", target.url + "/predict?model=circles", POINT, "application/json"
            )
            assert status == 200
            assert body["predictions"] == expected["predictions"]
        slow.sendall(PREDICT[-5:])
        ((status, answer),) = _answers(slow, 1)
    assert status == 200
    assert json.loads(answer)["predictions"] == expected["predictions"]
