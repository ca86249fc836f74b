"""POST /predict, /models/<name>/predict, /models/<name>/versions/<v>/predict."""

from __future__ import annotations

import time
from typing import Any

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
)

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


def _predict(path_name: str | None, path_version: int | None) -> dict[str, Any]:
    started = time.perf_counter()
    state = current_app.extensions["serving"]
    settings, registry = state.settings, state.registry
    mimetype = request.mimetype
    query = request.args.to_dict()
    blobs: list[tuple[str, bytes]] = []
    if mimetype == "application/json" or mimetype.endswith("+json"):
        body = parse_json(request.get_data(cache=False))
        if not isinstance(body, dict):
            raise ValidationFailed(
                "the JSON body must be an object with one of: " + ", ".join(INPUT_KEYS)
            )
        options = _load(_JSON_SCHEMA, {**query, **body})
    elif mimetype == "multipart/form-data":
        options = _load(_OPTIONS_SCHEMA, {**query, **request.form.to_dict()})
        blobs = [
            (f"file {upload.filename or field!r}", upload.read())
            for field, upload in request.files.items(multi=True)
        ]
        if not blobs:
            raise ValidationFailed("the multipart body has no file; attach one or more images")
    elif mimetype.startswith("image/") or mimetype == "application/octet-stream":
        options = _load(_OPTIONS_SCHEMA, query)
        blobs = [("the request body", request.get_data(cache=False))]
    else:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'!r} is not supported; send application/json, "
            "multipart/form-data or an image (image/png, image/jpeg, ...)"
        )
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
    g.model, g.instances = entry, len(batch)
    labels = (entry.name, str(entry.version))
    metrics.child(metrics.PREPROCESSING_DURATION, *labels).observe(time.perf_counter() - started)
    predictions = inference.predict(entry, batch, options.get("top_k"), options["logits"])
    metrics.record_predictions(
        entry.name, entry.version, (p["label"] for p in predictions),
        (p["confidence"] for p in predictions),
    )  # fmt: skip
    # Built directly (the schema documents it): a marshmallow dump of every probability
    # would cost more than the model itself on small inputs.
    return current_app.json.response(
        {
            "request_id": g.request_id,
            "model": {
                "name": entry.name,
                "version": entry.version,
                "task": entry.metadata["task"],
                "provider": entry.provider,
            },
            "predictions": predictions,
        }
    )
