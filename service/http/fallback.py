"""Flask's own app, behind the dispatcher, answering like the service.

A request the route table has no route for goes on to Flask's own ``wsgi_app``: a user's
routes, blueprints and extensions (:mod:`service.http.dispatcher`). Flask would answer its
errors (no route: 404; a wrong method: 405; a body above ``MAX_CONTENT_LENGTH``: 413; an
exception: 500) with an HTML page; the handlers installed here answer them, and any
:class:`~service.errors.ApiError` a route raises, with the error body of the protocol the
path falls under (``/v2/...``: the V2 shape; elsewhere the native one) and the dispatcher's
request id. A user's own handler for a status code (``@app.errorhandler(404)``) still wins:
Flask prefers a handler by code to one by class.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from flask import Flask, Response, has_request_context, request
from werkzeug import exceptions as http

from service.errors import ApiError, MethodNotAllowed, NotFound, PayloadTooLarge
from service.http import access

if TYPE_CHECKING:
    from service.http.routing import Router

INTERNAL = "internal error; the request id identifies it in the logs"


def install(app: Flask, router: Router) -> None:
    """Register the JSON error handlers, note the URL rule that matched (for the metrics),
    and put the request id on Flask's own error log."""

    def render(error: ApiError) -> Response:
        environ = request.environ
        rid = environ.get(access.ENVIRON_REQUEST_ID) or access.request_id(
            environ.get("HTTP_X_REQUEST_ID", "")
        )
        environ[access.ENVIRON_ERROR] = error
        answer = router.protocol_for(request.path).error_response(error, rid)
        return app.response_class(
            answer.body, answer.status, list(answer.headers), content_type=answer.content_type
        )

    def on_api_error(error: ApiError) -> Response:
        access.log_error(error, request.environ.get(access.ENVIRON_REQUEST_ID))
        return render(error)

    def on_http_error(exc: http.HTTPException) -> Response:
        if exc.response is not None:  # abort(response): the route's own answer
            return exc.response
        error = _api_error(exc, app.config.get("MAX_CONTENT_LENGTH"))
        if error.status < 500:  # Flask has logged a 500's exception, with its traceback
            access.log_error(error, request.environ.get(access.ENVIRON_REQUEST_ID))
        return render(error)

    def remember_rule(exc: BaseException | None) -> None:  # the metrics' endpoint label
        if request.url_rule is not None:
            request.environ[access.ENVIRON_RULE] = request.url_rule.rule

    app.register_error_handler(ApiError, on_api_error)
    app.register_error_handler(http.HTTPException, on_http_error)
    app.teardown_request(remember_rule)  # teardowns run whatever happened
    if not any(isinstance(f, _RequestIdFilter) for f in app.logger.filters):
        app.logger.addFilter(_RequestIdFilter())


def _api_error(exc: http.HTTPException, limit: int | None) -> ApiError:
    """The service's error for one of werkzeug's (which a route or Flask raised)."""
    method, path = request.method, request.path
    if isinstance(exc, http.NotFound) and request.url_rule is None:
        return NotFound(f"no route for {method} {path}; see /docs")
    if isinstance(exc, http.MethodNotAllowed):
        return MethodNotAllowed.on(method, path, sorted(exc.valid_methods or ()))
    if isinstance(exc, http.RequestEntityTooLarge) and limit:
        return PayloadTooLarge.over(limit)
    if isinstance(exc, http.InternalServerError):
        return ApiError(INTERNAL)
    headers = tuple((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
    error = ApiError(exc.description or exc.name, headers=headers)
    error.status = exc.code or 500
    error.code = re.sub(r"[^a-z0-9]+", "_", exc.name.lower()).strip("_")  # "not_found"
    return error


class _RequestIdFilter(logging.Filter):
    """Flask logs a route's unhandled exception itself (``app.logger``, the service's
    error logger): this adds the request id the 500's body points to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = request.environ.get(access.ENVIRON_REQUEST_ID)
        return True
