"""POST /predict, /models/<name>/predict, /models/<name>/versions/<v>/predict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError

from service import inference, metrics
from service.errors import UnsupportedMediaType, ValidationFailed
from service.inputs import parse_json, tensor_from_images, tensor_from_json
from service.schemas import (
    INPUT_KEYS,
    ApiErrorSchema,
    PredictJSONSchema,
    PredictOptionsSchema,
    PredictResponseSchema,
    plain_options,
)

if TYPE_CHECKING:  # service.app imports this module
    from service.app import ServingState
    from service.registry import ModelEntry

blp = Blueprint("predict", __name__, description="Predictions from a model's logits")

_JSON_SCHEMA = PredictJSONSchema()
_OPTIONS_SCHEMA = PredictOptionsSchema()
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": "PredictJSON"},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "model": {"type": "string"},
                    "version": {"type": "integer"},
                    "top_k": {"type": "integer"},
                },
            }
        },
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in _IMAGE_TYPES},
    },
}
_QUERY = [
    {"in": "query", "name": n, "schema": {"type": t}, "required": False}
    for n, t in (("model", "string"), ("version", "integer"), ("top_k", "integer"),
                 ("logits", "boolean"))
]  # fmt: skip


def _documented(function):
    for status in (400, 404, 413, 415, 422, 503):
        function = blp.alt_response(status, schema=ApiErrorSchema)(function)
    function = blp.response(200, PredictResponseSchema)(function)
    return blp.doc(requestBody=_REQUEST_BODY, parameters=_QUERY)(function)


@blp.route("/predict", methods=["POST"])
@_documented
def predict():
    """Predict with the model named in the body or query (or the default model)."""
    return _predict(None, None)


@blp.route("/models/<string:name>/predict", methods=["POST"])
@_documented
def predict_model(name: str):
    """Predict with the latest loaded version of a model."""
    return _predict(name, None)


@blp.route("/models/<string:name>/versions/<int:version>/predict", methods=["POST"])
@_documented
def predict_version(name: str, version: int):
    """Predict with one version of a model."""
    return _predict(name, version)


def _load(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        first = next(iter(exc.messages.items()))
        field, message = first[0], first[1][0] if isinstance(first[1], list) else first[1]
        where = "" if field == "_schema" else f"{field}: "
        raise ValidationFailed(f"{where}{message}", details=exc.messages) from None


def _predict(path_name: str | None, path_version: int | None):
    """The Flask adapter: gather the request's parts, answer through ``answer``."""
    kind = body_kind(request.mimetype)
    query = request.args.to_dict()
    if kind == "multipart":
        parts: dict[str, Any] = {
            "form": request.form.to_dict(),
            "files": [(f"file {upload.filename or field!r}", upload.read())
                      for field, upload in request.files.items(multi=True)],
        }  # fmt: skip
    else:
        parts = {"body": request.get_data(cache=False)}
    outcome = answer(current_app.extensions["serving"], kind, query, g.request_id, path_name,
                     path_version, **parts)  # fmt: skip
    g.model, g.instances = outcome.entry, outcome.instances
    return current_app.json.response(outcome.payload)


def body_kind(mimetype: str) -> str:
    """json, multipart or image (raw bytes); any other Content-Type is a 415."""
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return "json"
    if mimetype == "multipart/form-data":
        return "multipart"
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return "image"
    raise UnsupportedMediaType(
        f"Content-Type {mimetype or '(none)'!r} is not supported; send application/json, "
        "multipart/form-data or an image (image/png, image/jpeg, ...)"
    )


@dataclass(frozen=True)
class Outcome:
    """A predict call's response body, and what the access log says about it."""

    payload: dict[str, Any]
    entry: ModelEntry
    instances: int


def answer(
    state: ServingState,
    kind: str,
    query: dict[str, str],
    request_id: str,
    path_name: str | None = None,
    path_version: int | None = None,
    *,
    body: bytes = b"",
    form: dict[str, str] | None = None,
    files: Sequence[tuple[str, bytes]] = (),
) -> Outcome:
    """A predict call, whichever HTTP layer received it (this view or service.fastpath).

    kind is body_kind's; body is the JSON or raw image bytes, form and files a multipart
    body's fields and (description, bytes) files. Raises ApiError for anything wrong.
    """
    started = time.perf_counter()
    settings, registry = state.settings, state.registry
    blobs: Sequence[tuple[str, bytes]] = ()
    if kind == "json":
        parsed = parse_json(body)
        if not isinstance(parsed, dict):
            raise ValidationFailed(
                "the JSON body must be an object with one of: " + ", ".join(INPUT_KEYS)
            )
        merged = {**query, **parsed}
        options = plain_options(merged) or _load(_JSON_SCHEMA, merged)
    elif kind == "multipart":
        options = _load(_OPTIONS_SCHEMA, {**query, **(form or {})})
        blobs = files
        if not blobs:
            raise ValidationFailed("the multipart body has no file; attach one or more images")
    else:
        options = _load(_OPTIONS_SCHEMA, query)
        blobs = [("the request body", body)]
    if path_name and options.get("model", path_name) != path_name:
        raise ValidationFailed(f"model {options['model']!r} conflicts with the URL's {path_name!r}")
    name = path_name or options.get("model") or settings.default_model
    if not name:
        raise ValidationFailed(
            "name a model (the model field or ?model=): no default model is configured",
            details={"available": registry.names()},
        )
    entry = registry.get(name, path_version or options.get("version"))
    limits = (settings.max_batch_size, settings.max_image_pixels)
    if blobs:
        batch = tensor_from_images(blobs, entry.spec, *limits)
    else:
        key = next(k for k in INPUT_KEYS if k in options)
        batch = tensor_from_json(key, options[key], entry.spec, *limits)
    labels = (entry.name, str(entry.version))
    metrics.child(metrics.PREPROCESSING_DURATION, *labels).observe(time.perf_counter() - started)
    predictions = inference.predict(entry, batch, options.get("top_k"), options["logits"])
    metrics.record_predictions(
        entry.name, entry.version, (p["label"] for p in predictions),
        (p["confidence"] for p in predictions),
    )  # fmt: skip
    # Built directly (the schema documents it): a marshmallow dump of every probability
    # would cost more than the model itself on small inputs.
    payload = {
        "request_id": request_id,
        "model": {
            "name": entry.name,
            "version": entry.version,
            "task": entry.metadata["task"],
            "provider": entry.provider,
        },
        "predictions": predictions,
    }
    return Outcome(payload, entry, len(batch))
