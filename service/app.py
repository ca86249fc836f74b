"""The Flask application factory: ``create_app(settings=None)``.

gunicorn calls ``service.app:create_app()`` in each worker, so every worker builds its own
onnxruntime sessions; nothing is constructed at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson
from flask import Flask, Response, g, jsonify, request, send_from_directory
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from service import errors, logs, observability
from service.api import health, metrics_api, models, predict
from service.fastpath import FastPredict
from service.registry import Registry
from service.settings import Settings

API_VERSION = "1.0.0"


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON through orjson: keys in insertion order (probabilities best first)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(
            orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), mimetype=self.mimetype
        )


@dataclass(frozen=True)
class ServingState:
    """What the views need, kept in ``app.extensions["serving"]``."""

    settings: Settings
    registry: Registry


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build an app: load every model, register the blueprints, errors and request ids."""
    settings = replace(settings, **overrides) if settings else Settings.from_env(**overrides)
    logs.configure(settings.log_level)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Keras classifier serving",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",  # served locally: no CDN needed
        API_SPEC_OPTIONS={
            "info": {
                "description": "Classifiers trained in Keras, exported to ONNX and served with "
                "onnxruntime. Probabilities are the softmax (or sigmoid) of the model's logits."
            }
        },
    )
    api = Api(app)
    api.spec.components.schema("PredictJSON", schema=predict.PredictJSONSchema)
    for blueprint in (predict.blp, models.blp, health.blp, metrics_api.blp):
        api.register_blueprint(blueprint)

    registry = Registry(settings)
    registry.load_all()
    app.extensions["serving"] = ServingState(settings, registry)

    observability.install(app)
    _register_error_handlers(app, settings)
    _register_swagger_assets(app)
    app.wsgi_app = FastPredict(app)  # the predict routes skip Flask's per-request plumbing
    return app


def _error_response(error: errors.ApiError) -> tuple[Response, int]:
    g.error = error  # counted and logged by observability's after_request
    return jsonify(observability.error_body(error, g.get("request_id"))), error.status


def _register_error_handlers(app: Flask, settings: Settings) -> None:
    @app.errorhandler(errors.ApiError)
    def handle_api_error(error: errors.ApiError):
        observability.log_error(error, g.get("request_id"))
        return _error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        code = error.code or 500
        if code == 404:
            mapped: errors.ApiError = errors.NotFound(
                f"no route for {request.method} {request.path}; see /docs"
            )
        elif code == 405:
            mapped = errors.MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}",
                details={"allowed": sorted(error.valid_methods or [])},
            )
        elif code == 413:
            mapped = errors.PayloadTooLarge.over(settings.max_body_bytes)
        elif code == 400:
            mapped = errors.BadRequest(f"the request could not be parsed: {error.description}")
        else:
            mapped = errors.ApiError(error.description or error.name)
            mapped.status, mapped.code = code, error.name.lower().replace(" ", "_")
        return _error_response(mapped)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        rid = g.get("request_id")
        mapped = observability.log_unexpected(request.method, request.path, error, rid)
        return _error_response(mapped)


def _register_swagger_assets(app: Flask) -> None:
    from swagger_ui_bundle import swagger_ui_path

    @app.route("/docs/assets/<path:filename>")
    def swagger_assets(filename: str):
        return send_from_directory(swagger_ui_path, filename, max_age=86400)
