"""Per-request bookkeeping: request ids, HTTP metrics, and one JSON log line per request.

The dispatcher calls these around every route, so every protocol's routes (and any route
added later) are counted, timed and logged alike.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from service import metrics
from service.errors import ApiError

access_log = logging.getLogger("service.access")
error_log = logging.getLogger("service.app")

# fullmatch, not ^...$: "$" also matches before a final newline, which would reach the
# response's X-Request-ID header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# WSGI environ keys around what Flask answers: the request id (the dispatcher's; a user's route
# may read it), and for the metrics and the log line, the Flask URL rule that matched and the
# error a Flask error handler rendered (service.http.fallback's).
ENVIRON_REQUEST_ID = "service.request_id"
ENVIRON_RULE = "service.url_rule"
ENVIRON_ERROR = "service.error"


_ids = {"pid": 0, "prefix": "", "counter": itertools.count()}


def new_request_id() -> str:
    """32 hex characters: a random prefix per process and a counter (cheaper than uuid4)."""
    if _ids["pid"] != os.getpid():  # first call in this (forked) worker
        _ids.update(pid=os.getpid(), prefix=os.urandom(8).hex(), counter=itertools.count())
    return f"{_ids['prefix']}{next(_ids['counter']):016x}"


def request_id(given: str) -> str:
    """The client's X-Request-ID when it is a sane token, else a new id."""
    return given if given and _REQUEST_ID.fullmatch(given) else new_request_id()


def begin(endpoint: str, method_label: str) -> None:
    """A request entered: count it in progress (``method_label``: metrics.method_label's)."""
    metrics.child(metrics.HTTP_IN_PROGRESS, endpoint, method_label).inc()


def end(endpoint: str, method_label: str) -> None:
    """A request left (answered or not)."""
    metrics.child(metrics.HTTP_IN_PROGRESS, endpoint, method_label).dec()


def log_error(error: ApiError, rid: str | None) -> None:
    """Client errors as warnings, server-side ones as errors."""
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    error_log.log(
        level,
        "%s: %s",
        error.code,
        error.message,
        extra={"request_id": rid, "status": error.status},
    )


def log_unexpected(method: str, path: str, exc: BaseException, rid: str | None) -> ApiError:
    """An exception no handler expected: logged with its traceback, answered as a bare 500."""
    error_log.error(
        "unhandled error in %s %s", method, path, exc_info=exc, extra={"request_id": rid}
    )
    return ApiError("internal error; the request id identifies it in the logs")


def record(
    *,
    rid: str | None,
    method: str,
    method_label: str,
    path: str,
    endpoint: str,
    status: int,
    duration: float,
    model: tuple[str, int] | None = None,
    instances: int | None = None,
    error: ApiError | None = None,
    key_id: str | None = None,
) -> None:
    """An answered request: HTTP metrics, the error count, and its access-log line (the
    metrics label the method as ``method_label``, the log line as sent; ``key_id`` is the
    API key's id, "none" without a valid key, None when keys are off)."""
    code = str(status)
    metrics.child(metrics.HTTP_REQUESTS, endpoint, method_label, code).inc()
    if key_id is not None:
        metrics.child(metrics.KEY_REQUESTS, key_id, endpoint, code).inc()
    metrics.child(metrics.HTTP_DURATION, endpoint, method_label, code).observe(duration)
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
            "model": model[0] if model else None,
            "version": model[1] if model else None,
            "instances": instances,
            "error": error.code if error is not None else None,
            "key_id": key_id,
        },
    )
