"""Per-request bookkeeping: request ids, HTTP metrics, and one JSON log line per request.

Two HTTP layers use it: Flask's hooks (installed here) and service.fastpath, which answers
the predict routes without Flask's request machinery; both record the same metrics, log
the same line and render errors the same way.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request

from service import metrics
from service.errors import ApiError

if TYPE_CHECKING:
    from service.registry import ModelEntry

access_log = logging.getLogger("service.access")
error_log = logging.getLogger("service.app")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


_ids = {"pid": 0, "prefix": "", "counter": itertools.count()}


def new_request_id() -> str:
    """32 hex characters: a random prefix per process and a counter (cheaper than uuid4)."""
    if _ids["pid"] != os.getpid():  # first call in this (forked) worker
        _ids.update(pid=os.getpid(), prefix=os.urandom(8).hex(), counter=itertools.count())
    return f"{_ids['prefix']}{next(_ids['counter']):016x}"


def request_id(given: str) -> str:
    """The client's X-Request-ID when it is a sane token, else a new id."""
    return given if given and _REQUEST_ID.match(given) else new_request_id()


def begin(endpoint: str, method: str) -> None:
    """A request entered: count it in progress."""
    metrics.child(metrics.HTTP_IN_PROGRESS, endpoint, method).inc()


def end(endpoint: str, method: str) -> None:
    """A request left (answered or not)."""
    metrics.child(metrics.HTTP_IN_PROGRESS, endpoint, method).dec()


def error_body(error: ApiError, rid: str | None) -> dict[str, Any]:
    """The JSON body of an error response: the error and the request id."""
    body = error.to_dict()
    body["request_id"] = rid
    return body


def log_error(error: ApiError, rid: str | None) -> None:
    """Client errors as warnings, server-side ones as errors."""
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    error_log.log(level, "%s: %s", error.code, error.message,
                  extra={"request_id": rid, "status": error.status})  # fmt: skip


def log_unexpected(method: str, path: str, exc: BaseException, rid: str | None) -> ApiError:
    """An exception no handler expected: logged with its traceback, answered as a bare 500."""
    error_log.error("unhandled error in %s %s", method, path, exc_info=exc,
                    extra={"request_id": rid})  # fmt: skip
    return ApiError("internal error; the request id identifies it in the logs")


def record(
    *,
    rid: str | None,
    method: str,
    path: str,
    endpoint: str,
    status: int,
    duration: float,
    entry: ModelEntry | None = None,
    instances: int | None = None,
    error: ApiError | None = None,
) -> None:
    """An answered request: HTTP metrics, the error count, and its access-log line."""
    code = str(status)
    metrics.child(metrics.HTTP_REQUESTS, endpoint, method, code).inc()
    metrics.child(metrics.HTTP_DURATION, endpoint, method, code).observe(duration)
    if error is not None:
        kind = metrics.error_kind(error.status, error.code)
        metrics.child(metrics.ERRORS, kind, error.code).inc()
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s",
        method,
        path,
        code,
        extra={
            "request_id": rid,
            "method": method,
            "path": path,
            "endpoint": endpoint,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "model": entry.name if entry else None,
            "version": entry.version if entry else None,
            "instances": instances,
            "error": error.code if error is not None else None,
        },
    )


def _endpoint() -> str:
    """The URL rule (bounded), never the raw path."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def install(app: Flask) -> None:
    """Register the before/after/teardown hooks on an app."""

    @app.before_request
    def start() -> None:
        g.request_id = request_id(request.headers.get("X-Request-ID", ""))
        g.started = time.perf_counter()
        g.endpoint = _endpoint()
        begin(g.endpoint, request.method)
        g.in_progress = True

    @app.after_request
    def finish(response: Response) -> Response:
        rid = g.get("request_id")
        response.headers["X-Request-ID"] = rid or ""
        record(
            rid=rid,
            method=request.method,
            path=request.path,
            endpoint=g.get("endpoint") or _endpoint(),
            status=response.status_code,
            duration=time.perf_counter() - g.get("started", time.perf_counter()),
            entry=g.get("model"),
            instances=g.get("instances"),
            error=g.get("error"),
        )
        return response

    @app.teardown_request
    def leave(exc: BaseException | None) -> None:
        if g.pop("in_progress", False):
            end(g.endpoint, request.method)
