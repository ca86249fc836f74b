"""Per-request bookkeeping: request ids, HTTP metrics, and one JSON log line per request."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from flask import Flask, Response, g, request

from service import metrics

access_log = logging.getLogger("service.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


_ids = {"pid": 0, "prefix": "", "counter": itertools.count()}


def new_request_id() -> str:
    """32 hex characters: a random prefix per process and a counter (cheaper than uuid4)."""
    if _ids["pid"] != os.getpid():  # first call in this (forked) worker
        _ids.update(pid=os.getpid(), prefix=os.urandom(8).hex(), counter=itertools.count())
    return f"{_ids['prefix']}{next(_ids['counter']):016x}"


def _endpoint() -> str:
    """The URL rule (bounded), never the raw path."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def install(app: Flask) -> None:
    """Register the before/after/teardown hooks on an app."""

    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else new_request_id()
        g.started = time.perf_counter()
        g.endpoint = _endpoint()
        metrics.child(metrics.HTTP_IN_PROGRESS, g.endpoint, request.method).inc()
        g.in_progress = True

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        endpoint = g.get("endpoint") or _endpoint()
        status = str(response.status_code)
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.child(metrics.HTTP_REQUESTS, endpoint, request.method, status).inc()
        metrics.child(metrics.HTTP_DURATION, endpoint, request.method, status).observe(duration)
        error = g.get("error")
        if error is not None:
            metrics.ERRORS.labels(metrics.error_kind(error.status, error.code), error.code).inc()
        entry = g.get("model")
        access_log.info(
            "%s %s %s",
            request.method,
            request.path,
            status,
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 3),
                "model": entry.name if entry else None,
                "version": entry.version if entry else None,
                "instances": g.get("instances"),
                "error": error.code if error is not None else None,
            },
        )
        return response

    @app.teardown_request
    def leave(exc: BaseException | None) -> None:
        if g.pop("in_progress", False):
            metrics.child(metrics.HTTP_IN_PROGRESS, g.endpoint, request.method).dec()
