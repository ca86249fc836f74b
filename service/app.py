"""The application factory: ``create_app(settings=None)``.

gunicorn calls ``service.app:create_app()`` in each worker, so every worker builds its own
onnxruntime sessions; nothing is constructed at import time. The app is a Flask app:
:class:`service.http.dispatcher.Dispatcher` wraps its ``wsgi_app`` and answers the one route
table in :mod:`service.protocols`; whatever the table has no route for goes on to Flask's own
``wsgi_app``, so routes, blueprints, hooks and extensions added to the app work
(docs/how-it-works.md#extending-the-app).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from flask import Flask

from service import logs, metrics
from service.http import fallback
from service.http.dispatcher import Dispatcher
from service.http.routing import Router
from service.inference.dataplane import DataPlane
from service.keys import Authenticator
from service.models.control import ControlStore
from service.models.lifecycle import Lifecycle
from service.models.registry import Registry
from service.protocols import openapi
from service.protocols.routes import PROTOCOLS, ROUTES, SCHEMAS
from service.protocols.serving import Serving
from service.settings import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build an app: load the models (and keep watching the repository), then answer
    from the route table."""
    settings = replace(settings, **overrides) if settings else Settings.from_env(**overrides)
    logs.configure(settings.log_level)
    app = Flask(__name__, static_folder=None)  # the service's files are in the route table
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)  # for Flask's own routes
    auth = Authenticator(settings.api_keys_file, settings.metrics_auth)
    registry = Registry(settings)
    dataplane = DataPlane(settings, registry)  # checks the limit settings before loading
    shared = metrics.multiprocess_dir()  # gunicorn: the instance's workers share decisions
    lifecycle = Lifecycle(settings, registry, ControlStore(Path(shared) if shared else None))
    lifecycle.start()
    document = orjson.dumps(openapi.document(ROUTES, SCHEMAS))
    serving = Serving(settings, registry, dataplane, lifecycle, auth, document)
    app.extensions["serving"] = serving
    router = Router(ROUTES, PROTOCOLS)
    fallback.install(app, router)  # Flask's errors as the service's JSON
    app.wsgi_app = Dispatcher(router, serving, app.wsgi_app)  # type: ignore[method-assign]
    return app
