"""The native codec: its error shape, a predict call decoded into a dataplane request, and
predictions encoded with every class named, best first.

Errors are ``{"error": {"code", "message", "details"?}, "request_id"}`` with the error's own
status.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import Schema, ValidationError

from service.contract.images import input_png
from service.contract.metadata import version_number
from service.contract.postprocessing import top_k as most_probable
from service.contract.preprocessing import ImageSpec
from service.errors import ApiError, UnsupportedMediaType, ValidationFailed
from service.http.messages import Request, Response, json_response, quoted
from service.http.routing import Protocol
from service.inference.dataplane import InferRequest, InferResult
from service.inference.inputs import EncodedImages, JsonInstances, parse_json
from service.models.registry import ModelEntry
from service.protocols.schemas import (
    INPUT_KEYS,
    PredictJSONSchema,
    PredictOptionsSchema,
    plain_options,
)
from service.protocols.serving import Serving


def render_error(error: ApiError, request_id: str) -> tuple[int, dict[str, Any]]:
    """The native error body, with the error's own status."""
    return error.status, error.to_dict(request_id)


PROTOCOL = Protocol("native", "/", render_error)

_JSON_SCHEMA = PredictJSONSchema()
_OPTIONS_SCHEMA = PredictOptionsSchema()
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")


# --- predict ---------------------------------------------------------------------------------


def body_kind(mimetype: str) -> str:
    """json, multipart or image (raw bytes); any other Content-Type is a 415."""
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return "json"
    if mimetype == "multipart/form-data":
        return "multipart"
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return "image"
    raise UnsupportedMediaType(
        f"Content-Type {quoted(mimetype) if mimetype else repr('(none)')} is not supported; "
        "send application/json, multipart/form-data or an image (image/png, image/jpeg, ...)"
    )


def _load(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        first = next(iter(exc.messages.items()))
        field, message = first[0], first[1][0] if isinstance(first[1], list) else first[1]
        where = "" if field == "_schema" else f"{field}: "
        raise ValidationFailed(f"{where}{message}", details=exc.messages) from None


def _agree(what: str, in_path: str | None, in_body: Any) -> Any:
    """The URL's model or version, or the body's; both given and different is a 422."""
    if in_path is None:
        return in_body
    same = in_body == in_path if what == "model" else _version(in_body) == _version(in_path)
    if in_body is not None and not same:
        raise ValidationFailed(f"{what} {in_body!r} conflicts with the URL's {in_path!r}")
    return in_path


def _version(given: Any) -> Any:
    """A version as compared: digits as their number, labels as they are."""
    return (version_number(given) or given) if isinstance(given, str) else given


def decode(
    request: Request, model: str | None, version: str | None, max_images: int
) -> tuple[InferRequest, dict]:
    """The dataplane request and the output options (top_k, logits) of a predict call;
    ``max_images``: the most files a multipart body may hold (the model's own cap, checked
    by the dataplane, may be lower)."""
    started = time.perf_counter()
    kind = body_kind(request.mimetype)
    query = request.query()
    if kind == "json":
        parsed = parse_json(request.body())
        if not isinstance(parsed, dict):
            raise ValidationFailed(
                "the JSON body must be an object with one of: " + ", ".join(INPUT_KEYS)
            )
        merged = {**query, **parsed}
        options = plain_options(merged) or _load(_JSON_SCHEMA, merged)
        key = next(k for k in INPUT_KEYS if k in options)
        inputs: JsonInstances | EncodedImages = JsonInstances(key, options[key])
    elif kind == "multipart":
        options_count = len(_OPTIONS_SCHEMA.fields)
        form, files = request.form(
            max_images + options_count,
            f" ({max_images:,} images, SERVING_MAX_IMAGES, and {options_count} option fields)",
        )
        options = _load(_OPTIONS_SCHEMA, {**query, **form})
        if not files:
            raise ValidationFailed("the multipart body has no file; attach one or more images")
        inputs = EncodedImages(files)
    else:
        options = _load(_OPTIONS_SCHEMA, query)
        inputs = EncodedImages([("the request body", request.body())])
    model = _agree("model", model, options.get("model"))
    version = _agree("version", version, options.get("version"))
    return InferRequest(inputs, model, version, started), options


def predictions(
    result: InferResult,
    top_k: int | None = None,
    with_logits: bool = False,
    with_input: bool = False,
) -> list[dict[str, Any]]:
    """One dict per instance: label, index, confidence, probabilities (all or the top k);
    the logits and the input as the model sees it where asked."""
    spec = result.entry.spec
    classes, probs = result.classes, result.probabilities
    k = len(classes) if top_k is None else min(top_k, len(classes))
    out = []
    for row, (p, pairs, win) in enumerate(
        zip(probs, most_probable(probs, classes, k), result.indices, strict=True)
    ):
        item: dict[str, Any] = {
            "label": classes[win],
            "index": int(win),
            "confidence": float(p[win]),
            "probabilities": dict(pairs),
        }
        if with_logits:
            item["logits"] = [float(v) for v in result.logits[row]]
        if with_input and result.tensor is not None:
            tensor = result.tensor[row]
            item["input"] = (
                input_png(tensor, spec.height, spec.width, spec.channels, spec.layout)
                if isinstance(spec, ImageSpec)
                else [float(v) for v in tensor]
            )
        out.append(item)
    return out


def _check_logits(entry: ModelEntry) -> None:
    if not entry.output.has_logits:
        raise ValidationFailed(
            f"model {entry.name!r} v{entry.version} outputs probabilities itself (its final "
            "softmax/sigmoid could not be removed on import): it has no logits to return"
        )


def predict(serving: Serving, request: Request) -> Response:
    """POST /predict, /models/{model}/predict, /models/{model}/versions/{version}/predict."""
    params = request.params
    infer, options = decode(
        request, params.get("model"), params.get("version"), serving.dataplane.limits.most_images
    )
    if options["logits"]:  # refused before any inference when the model has no logits
        infer.entry = serving.registry.version(infer.model, infer.version)
        _check_logits(infer.entry)
    result = serving.dataplane.infer(infer)
    entry = result.entry
    # Built directly (the schema documents it): a marshmallow dump of every probability
    # would cost more than the model itself on small inputs.
    payload = {
        "request_id": request.id,
        "model": {
            "name": entry.name,
            "version": entry.version,
            "task": entry.metadata["task"],
            "provider": entry.provider,
        },
        "predictions": predictions(
            result, options.get("top_k"), options["logits"], options.get("show_input", False)
        ),
    }
    return json_response(payload, model=entry.ref, instances=result.instances)
