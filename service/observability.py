"""Per-request bookkeeping: request ids, HTTP metrics, and one JSON log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from service import metrics

access_log = logging.getLogger("service.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _endpoint() -> str:
    """The URL rule (bounded), never the raw path."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def install(app: Flask) -> None:
    """Register the before/after/teardown hooks on an app."""

    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.started = time.perf_counter()
        g.endpoint = _endpoint()
        metrics.HTTP_IN_PROGRESS.labels(g.endpoint, request.method).inc()
        g.in_progress = True

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        endpoint = g.get("endpoint") or _endpoint()
        status = str(response.status_code)
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.HTTP_REQUESTS.labels(endpoint, request.method, status).inc()
        metrics.HTTP_DURATION.labels(endpoint, request.method, status).observe(duration)
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
            metrics.HTTP_IN_PROGRESS.labels(g.endpoint, request.method).dec()
