"""The WSGI application every request goes through: route table -> handler -> response.

Flask's own per-request plumbing (contexts, URL matching, hooks, werkzeug request and
response objects) costs more CPU than a small model's inference, so the service answers
the route table's routes here, without it. What every route needs is done once, around the
handler: the request id, the in-progress gauge, the HTTP metrics and access-log line, the
error body in the route's protocol's shape (a traceback never leaves), HEAD and OPTIONS,
405 with ``Allow``, CORS (:mod:`service.http.cors`), the API-key check for the route's
scope (401/403 in the route's protocol's error shape), and response compression when the
client accepts it.

A path the table does not know goes on to Flask's own ``wsgi_app`` (this wraps it, as
Flask's docs advise, rather than replacing it), so a user's routes, blueprints, hooks and
extensions work; the request id, the metrics and the access-log line wrap those too, and
Flask's errors are the service's JSON (:mod:`service.http.fallback`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

from service import metrics
from service.errors import ApiError, InvalidJSON, MethodNotAllowed, NotFound, error_body
from service.http import access
from service.http.cors import Cors
from service.http.messages import Request, Response, compress

if TYPE_CHECKING:
    from service.http.routing import Router

StartResponse = Callable[..., Any]

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_COMPRESS_ABOVE = 1024  # bytes: smaller bodies gain nothing worth the CPU
APP_ENDPOINT = "(app)"  # the in-progress label of a request Flask answers (its rule unknown yet)


def _render(protocol, error: ApiError, rid: str, method: str, path: str) -> Response:
    """The error in the protocol's shape; should that fail (a bug), a plain JSON 500 that
    still carries the request id: never an HTML page from the server underneath."""
    try:
        return protocol.error_response(error, rid)
    except Exception as exc:
        access.log_unexpected(method, path, exc, rid)
        message = "internal error; the request id identifies it in the logs"
        return Response(orjson.dumps(error_body("internal_error", message, request_id=rid)), 500)


class Dispatcher:
    """``app.wsgi_app``: answers the router's table; ``app`` (Flask's own ``wsgi_app``)
    answers the paths the table has no route for (without one: the dispatcher's 404)."""

    def __init__(self, router: Router, serving: Any, app: Callable | None = None) -> None:
        self.router, self.serving, self.auth = router, serving, serving.auth
        self.max_body = serving.settings.max_body_bytes
        self.cors = Cors.of(serving.settings.cors_origins)  # None: CORS off
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        route, params, endpoint, allowed = self.router.match(method, path)
        rid = access.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        if route is None and not allowed and self.app is not None:
            return self._to_app(environ, start_response, method, path, rid, started)
        protocol = route.protocol if route else self.router.protocol_for(path)
        label = metrics.method_label(method)
        access.begin(endpoint, label)
        key_id: str | None = None
        try:
            error: ApiError | None = None
            try:
                if route is not None:
                    key_id = self.auth.check(environ, route.scope)
                    request = Request(environ, method, path, params, rid, self.max_body)
                    response = route.handler(self.serving, request)
                elif method == "OPTIONS" and allowed:  # a browser's preflight needs no key
                    response = Response(b"", 204, headers=(("Allow", ", ".join(allowed)),))
                    if self.cors is not None and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
                        cors = self.cors.preflight(environ.get("HTTP_ORIGIN"), allowed)
                        response.headers = (*response.headers, *cors)
                elif allowed:
                    raise MethodNotAllowed.on(method, path, allowed)
                else:
                    raise NotFound(f"no route for {method} {path}; see /docs")
            except RecursionError:  # a structure nested deeper than any check of it can walk
                error = InvalidJSON("the request is nested too deeply")
                access.log_error(error, rid)
            except ApiError as exc:
                access.log_error(exc, rid)
                error = exc
                key_id = getattr(exc, "key_id", None) or key_id  # a 403's key
            except Exception as exc:  # a bug: logged with its traceback, never shown
                error = access.log_unexpected(method, path, exc, rid)
            if error is not None:
                response = _render(protocol, error, rid, method, path)
            body = response.body
            headers = [
                ("Content-Type", response.content_type),
                ("X-Request-ID", rid),
                *response.headers,
            ]
            if self.cors is not None:
                headers += self.cors.headers(environ.get("HTTP_ORIGIN"))
            accept = environ.get("HTTP_ACCEPT_ENCODING")
            if accept and len(body) > _COMPRESS_ABOVE:
                body, encoding = compress(body, accept)
                if encoding:
                    headers += [("Content-Encoding", encoding), ("Vary", "Accept-Encoding")]
            headers.append(("Content-Length", str(len(body))))
            start_response(_STATUS_LINES.get(response.status, str(response.status)), headers)
            access.record(
                rid=rid,
                method=method,
                method_label=label,
                path=path,
                endpoint=endpoint,
                status=response.status,
                duration=time.perf_counter() - started,
                model=response.model,
                instances=response.instances,
                error=error,
                key_id=(key_id or "none") if route and self.auth.requires(route.scope) else None,
            )
            return [] if method == "HEAD" else [body]
        finally:
            access.end(endpoint, label)

    def _to_app(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        method: str,
        path: str,
        rid: str,
        started: float,
    ) -> Iterable[bytes]:
        """Flask's own app answers (a user's route, else its 404 as the service's JSON), with
        the request id, the metrics and the access-log line around it; the endpoint label
        is the Flask URL rule that matched (``/hello/<name>``), "unmatched" for none."""
        label = metrics.method_label(method)
        access.begin(APP_ENDPOINT, label)
        environ[access.ENVIRON_REQUEST_ID] = rid
        status = ["500"]  # should the app raise (Flask's testing mode propagates)

        def respond(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = line
            if not any(name.lower() == "x-request-id" for name, _ in headers):
                headers = [*headers, ("X-Request-ID", rid)]
            return start_response(line, headers, exc_info)

        try:
            return self.app(environ, respond)
        finally:
            access.record(
                rid=rid,
                method=method,
                method_label=label,
                path=path,
                endpoint=environ.get(access.ENVIRON_RULE, "unmatched"),
                status=int(status[0][:3]),
                duration=time.perf_counter() - started,
                error=environ.get(access.ENVIRON_ERROR),
            )
            access.end(APP_ENDPOINT, label)
