"""Your own routes next to the service's: a Flask route, and a blueprint with hooks.

    gunicorn -c gunicorn.conf.py --pythonpath docs/examples 'extend_app:create()'

``create_app()`` returns a Flask app. The route table's routes (``/predict``, ``/models``,
``/v2/...``, ``/v1/...``, ...) are answered as before, without Flask's per-request plumbing;
every other path goes on to Flask, so what is added here (routes, blueprints,
``before_request``/``after_request``, error handlers, extensions such as flask-cors) works
on those paths, with the service's request id, metrics and access-log line around it, and
the service's JSON errors.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from service.app import create_app

extras = Blueprint("extras", __name__, url_prefix="/extras")


@extras.before_request
def start() -> None:
    """Time the view, and ask for an API key with the ``read`` scope: the service checks
    keys on its own routes only, so a route of yours asks for them (a no-op while
    ``SERVING_API_KEYS_FILE`` is unset; a 401 or 403 in the service's shape otherwise)."""
    g.started = time.perf_counter()
    current_app.extensions["serving"].auth.check(request.environ, "read")


@extras.after_request
def timing(response: Response) -> Response:
    """How long the blueprint's view took, as a ``Server-Timing`` header."""
    took = (time.perf_counter() - g.started) * 1000
    response.headers["Server-Timing"] = f"extras;dur={took:.3f}"
    return response


@extras.get("/classes/<name>")
def classes(name: str) -> dict[str, Any]:
    """A served model's class names, in index order (an unknown model: the service's 404)."""
    entry = current_app.extensions["serving"].registry.version(name)
    return {"model": entry.name, "version": entry.version, "classes": entry.metadata["classes"]}


def create(settings: Any = None, **overrides: Any) -> Flask:
    """The service's app, plus a route and the blueprint (arguments: ``create_app``'s)."""
    app = create_app(settings, **overrides)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        """The request id is the service's, as on every response's ``X-Request-ID``."""
        return {"hello": "from your route", "request_id": request.environ["service.request_id"]}

    app.register_blueprint(extras)
    return app
