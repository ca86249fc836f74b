"""A real gunicorn process (2 workers) on a free loopback port, shared by the e2e tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import MODELS, ROOT


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running gunicorn: its URL, process, log file and metrics folder."""

    url: str
    process: subprocess.Popen
    log_path: Path
    metrics_dir: Path
    rounds: int = 0  # for tests that repeat a traffic mix

    def log_lines(self) -> list[dict]:
        """The JSON log lines written so far (whole lines: a worker may be writing the last
        one while this reads)."""
        lines = []
        for line in self.log_path.read_text().split("\n")[:-1]:
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@contextmanager
def running_server(
    workdir: Path, preexec=None, gunicorn_args: tuple[str, ...] = (), **settings: str
) -> Iterator[Server]:
    """Start gunicorn as the README does, wait for readiness, stop it at the end
    (``preexec``: run in the server's process before it starts, e.g. to set limits;
    ``gunicorn_args``: more command-line arguments, e.g. another app than gunicorn.conf.py's)."""
    port = free_port()
    log_path, metrics_dir = workdir / "gunicorn.log", workdir / "metrics"
    env = {
        **os.environ,
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_WORKERS": "2",
        "SERVING_MODEL_REPOSITORY": str(MODELS),
        "SERVING_DEFAULT_MODEL": "fashion-mnist",
        "SERVING_METRICS_DIR": str(metrics_dir),
        **{f"SERVING_{k.upper()}": v for k, v in settings.items()},
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *gunicorn_args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not ready in 60 s:\n{log_path.read_text()}")
            try:
                if call("GET", base + "/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield Server(base, process, log_path, metrics_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    """The shared server's URL (tests that need exact counts start their own)."""
    with running_server(tmp_path_factory.mktemp("gunicorn")) as running:
        yield running.url


def call(method, url, body=None, ctype=None, headers=None):
    """(status, headers, body) of one HTTP request, 4xx/5xx included; JSON bodies parsed."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if ctype:
        request.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), _body(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), _body(error)


def _body(response):
    data = response.read()
    if response.headers.get_content_type() == "application/json":
        return json.loads(data)
    return data.decode()
