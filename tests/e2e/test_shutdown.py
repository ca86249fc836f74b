"""SIGTERM (docker stop, a Kubernetes pod deletion) drains in-flight requests."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from tests.e2e.conftest import running_server

pytestmark = pytest.mark.slow


def test_sigterm_lets_an_in_flight_request_finish(tmp_path):
    body = json.dumps({"model": "circles", "instances": [[0.1, -0.2]] * 20}).encode()
    half = len(body) // 2
    with running_server(tmp_path, graceful_timeout="10") as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body[:half]
            )
            time.sleep(0.5)  # a worker thread is now blocked reading the rest of the body
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # gunicorn is shutting down: no new connections, in-flight kept
            sock.sendall(body[half:])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert len(json.loads(payload)["predictions"]) == 20
        assert server.process.wait(timeout=15) == 0  # a clean exit, well before the timeout
        messages = [line["message"] for line in server.log_lines()]
        assert any("Handling signal: term" in m for m in messages)
        assert any("Shutting down" in m for m in messages)
