"""The gunicorn worker's JSON error pages, and the gunicorn it is written against: the base
worker's methods and attributes it uses keep the shape it expects."""

from __future__ import annotations

import inspect
import json
from importlib.metadata import version

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from service.http.worker import ServingWorker, json_error


def test_error_pages_are_json_with_a_request_id():
    page = json_error(408, "Request Timeout", "the request did not arrive within 3 s")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nConnection: close\r\n" in head
    document = json.loads(body)
    assert document["error"] == {
        "code": "request_timeout",
        "message": "the request did not arrive within 3 s",
    }
    assert f"X-Request-ID: {document['request_id']}".encode() in head
    assert f"Content-Length: {len(body)}".encode() in head


def test_gunicorn_is_the_version_the_worker_is_written_against():
    assert version("gunicorn").startswith("27.0.")


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_base_worker_still_has_what_the_worker_uses():
    # What ServingWorker overrides or calls on gunicorn's base worker, as 27.0 has it.
    assert _parameters(Worker.__init__) == [
        "self",
        "age",
        "ppid",
        "sockets",
        "app",
        "timeout",
        "cfg",
        "log",
    ]
    assert _parameters(Worker.init_process) == ["self"]
    assert _parameters(Worker.run) == ["self"]
    assert _parameters(Worker.notify) == ["self"]
    assert _parameters(Worker.handle_exit) == ["self", "sig", "frame"]
    source = inspect.getsource(Worker)
    # init_process loads the app into self.wsgi, makes self.PIPE (the signal wake-up pipe)
    # and then calls self.run(); the loop reads these attributes.
    for attribute in (
        "self.wsgi = ",
        "self.PIPE = os.pipe()",
        "self.run()",
        "self.nr = 0",
        "self.max_requests",
        "self.alive = ",
        "signal.set_wakeup_fd(self.PIPE[1])",
    ):
        assert attribute in source, attribute
    # The arbiter asks the worker class to check the configuration (TLS is refused there).
    assert "self.worker_class.check_config(self.cfg, self.log)" in inspect.getsource(Arbiter)
    for name in ("init_process", "run", "check_config"):
        assert name in vars(ServingWorker)
