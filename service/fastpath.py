"""The predict routes, answered without Flask's per-request machinery.

Flask's plumbing for one request (app and request contexts, URL matching, six hooks,
werkzeug Request and Response objects, flask-smorest's wrappers) costs more CPU than
everything else the service adds to a prediction. This WSGI middleware sits in front of
the Flask app and answers POSTs to the three predict routes itself: it takes what a
prediction needs from the WSGI environ, calls the same ``predict.answer`` the Flask views
call, and records the same metrics, access-log line, request id and error body.

Everything else goes to Flask unchanged: other routes and methods, multipart bodies
(werkzeug parses them), bodies without a Content-Length (chunked uploads). The tests hold
this path to the Flask views' answers, request by request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from service import observability
from service.api.predict import answer, body_kind
from service.errors import ApiError, BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from flask import Flask

# (pattern, the Flask URL rule it stands for: the endpoint label in metrics and logs)
ROUTES = (
    (re.compile(r"/predict"), "/predict"),
    (re.compile(r"/models/([^/]+)/predict"), "/models/<string:name>/predict"),
    (
        re.compile(r"/models/([^/]+)/versions/(\d+)/predict"),
        "/models/<string:name>/versions/<int:version>/predict",
    ),
)
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

StartResponse = Callable[..., Any]


def match(path: str) -> tuple[str, str | None, int | None] | None:
    """(URL rule, model name, version) when the path is a predict route, else None."""
    if not path.endswith("/predict"):
        return None
    for pattern, rule in ROUTES:
        found = pattern.fullmatch(path)
        if found:
            groups = found.groups()
            name = groups[0] if groups else None
            version = int(groups[1]) if len(groups) > 1 else None
            return rule, name, version
    return None


def query_options(query_string: str) -> dict[str, str]:
    """The query string as werkzeug's ``request.args.to_dict()`` has it: first value wins."""
    if not query_string:
        return {}
    if not query_string.isascii():  # WSGI hands bytes over as latin-1; werkzeug reads UTF-8
        query_string = query_string.encode("latin-1").decode("utf-8", "replace")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True, errors="replace"):
        options.setdefault(key, value)
    return options


class FastPredict:
    """WSGI middleware: ``app.wsgi_app = FastPredict(app)``; ``fallback`` is Flask's."""

    def __init__(self, app: Flask) -> None:
        self.fallback = app.wsgi_app
        self.state = app.extensions["serving"]
        self.max_body = self.state.settings.max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            route = match(environ.get("PATH_INFO", ""))
            mimetype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
            length = environ.get("CONTENT_LENGTH", "")
            if route and length.isdigit() and mimetype != "multipart/form-data":
                return self.predict(environ, start_response, route, mimetype, int(length))
        return self.fallback(environ, start_response)

    def predict(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        route: tuple[str, str | None, int | None],
        mimetype: str,
        length: int,
    ) -> list[bytes]:
        """One prediction request, start to end."""
        started = time.perf_counter()
        endpoint, name, version = route
        rid = observability.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        observability.begin(endpoint, "POST")
        try:
            outcome = error = None
            try:
                kind = body_kind(mimetype)
                if length > self.max_body:
                    raise PayloadTooLarge.over(self.max_body)
                body = environ["wsgi.input"].read(length) if length else b""
                if len(body) != length:
                    raise BadRequest(
                        f"the request body ended after {len(body):,} of {length:,} bytes"
                    )
                outcome = answer(self.state, kind, query_options(environ.get("QUERY_STRING", "")),
                                 rid, name, version, body=body)  # fmt: skip
                status, payload = 200, outcome.payload
            except ApiError as exc:
                observability.log_error(exc, rid)
                error = exc
            except Exception as exc:  # a bug: logged with its traceback, never shown
                error = observability.log_unexpected("POST", environ["PATH_INFO"], exc, rid)
            if error is not None:
                status, payload = error.status, observability.error_body(error, rid)
            data = orjson.dumps(payload, option=_JSON_OPTIONS)
            start_response(
                _STATUS_LINES[status],
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(data))),
                    ("X-Request-ID", rid),
                ],
            )
            observability.record(
                rid=rid,
                method="POST",
                path=environ["PATH_INFO"],
                endpoint=endpoint,
                status=status,
                duration=time.perf_counter() - started,
                entry=outcome.entry if outcome else None,
                instances=outcome.instances if outcome else None,
                error=error,
            )
            return [data]
        finally:
            observability.end(endpoint, "POST")
