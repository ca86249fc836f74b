"""The native API: /predict (JSON, multipart, raw images), /models, /health.

Errors are ``{"error": {"code", "message", "details"?}, "request_id"}`` with the error's own
status. Predictions name every class with its probability, best first.
"""

from __future__ import annotations

import os
import time
from typing import Any

from marshmallow import Schema, ValidationError

from service import metrics
from service.context import Serving
from service.dataplane import InferRequest, InferResult
from service.errors import ApiError, NotFound, UnsupportedMediaType, ValidationFailed
from service.images import input_png
from service.inputs import EncodedImages, JsonInstances, parse_json
from service.metadata import version_number
from service.postprocessing import top_k as most_probable
from service.preprocessing import ImageSpec
from service.registry import ModelEntry, ModelView
from service.routing import Protocol, Route, versioned
from service.schemas import (
    INPUT_KEYS,
    ApiErrorSchema,
    HealthSchema,
    ModelSchema,
    ModelsSchema,
    ModelVersionSchema,
    PredictFormSchema,
    PredictJSONSchema,
    PredictOptionsSchema,
    PredictResponseSchema,
    plain_options,
)
from service.web import Request, Response, json_response


def render_error(error: ApiError, request_id: str) -> tuple[int, dict[str, Any]]:
    """The native error body, with the error's own status."""
    body = error.to_dict()
    body["request_id"] = request_id
    return error.status, body


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
        f"Content-Type {mimetype or '(none)'!r} is not supported; send application/json, "
        "multipart/form-data or an image (image/png, image/jpeg, ...)"
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


def decode(request: Request, model: str | None, version: str | None) -> tuple[InferRequest, dict]:
    """The dataplane request and the output options (top_k, logits) of a predict call."""
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
        form, files = request.form()
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
                if isinstance(spec, ImageSpec) else [float(v) for v in tensor]
            )  # fmt: skip
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
    infer, options = decode(request, params.get("model"), params.get("version"))
    if options["logits"]:  # refused before any inference when the model has no logits
        infer.entry = serving.dataplane.resolve(infer.model, infer.version)
        _check_logits(infer.entry)
    result = serving.dataplane.infer(infer)
    entry = result.entry
    # Built directly (the schema documents it): a marshmallow dump of every probability
    # would cost more than the model itself on small inputs.
    payload = {
        "request_id": request.id,
        "model": {"name": entry.name, "version": entry.version,
                  "task": entry.metadata["task"], "provider": entry.provider},
        "predictions": predictions(result, options.get("top_k"), options["logits"],
                                   options.get("show_input", False)),
    }  # fmt: skip
    return json_response(payload, entry=entry, instances=result.instances)


# --- models and health -----------------------------------------------------------------------


def _metrics_view(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Test metrics without the per-class table, and the calibration figures; None when an
    imported model has neither."""
    test = metrics.get("test")
    view = {k: v for k, v in test.items() if k != "per_class"} if test else {}
    if "calibration" in metrics:
        view["calibration"] = metrics["calibration"]
    return view or None


def version_view(
    entry: ModelEntry, full: bool = False, model: ModelView | None = None
) -> dict[str, Any]:
    """Status (and why not served), provider, labels, weight, and the metadata a client
    needs (all of it when ``full``)."""
    view: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "status": entry.status,
        "error": entry.error,
        "provider": entry.provider,
        "load_seconds": round(entry.load_seconds, 4),
    }
    if model is not None:
        view["labels"] = model.labels_of(entry.version)
        shares = model.chooser.shares if model.chooser else {}
        view["weight"] = round(shares[entry.version], 6) if entry.version in shares else None
    if entry.notice:
        view["notice"] = entry.notice
    meta = entry.metadata
    if meta:
        view.update(
            task=meta["task"],
            classes=meta["classes"],
            input=meta["input"],
            output=meta["output"],
            preprocessing=meta["preprocessing"],
            metrics=_metrics_view(meta["metrics"]),
        )
        if full:
            view["metadata"] = meta
    if full:
        view["report"] = report_files(entry)
    return view


_REPORT_TYPES = {".png": "image/png", ".md": "text/markdown; charset=utf-8",
                 ".json": "application/json"}  # fmt: skip


def report_files(entry: ModelEntry) -> list[str]:
    """The files of the version's training report (plots and its README), by name."""
    try:
        with os.scandir(entry.path / "report") as found:
            return sorted(f.name for f in found if not f.name.startswith(".")
                          and os.path.splitext(f.name)[1] in _REPORT_TYPES
                          and f.is_file())  # fmt: skip
    except OSError:
        return []


def get_report_file(serving: Serving, request: Request) -> Response:
    """GET /models/{model}/versions/{version}/report/{filename}: a file of the training
    report (the reliability diagram, training curves, confusion matrix, README)."""
    model = serving.registry.view(request.params["model"])
    entry = serving.registry.find_in(model, request.params["version"])
    name = request.params["filename"]
    if name not in report_files(entry):
        raise NotFound(f"model {entry.name!r} version {entry.version} has no report file "
                       f"{name!r}; see 'report' in /models/{entry.name}/versions/"
                       f"{entry.version}")  # fmt: skip
    try:
        data = (entry.path / "report" / name).read_bytes()
    except OSError:
        raise NotFound(f"report file {name!r} could not be read") from None
    return Response(data, content_type=_REPORT_TYPES[os.path.splitext(name)[1]],
                    headers=(("Cache-Control", "no-cache"),))  # fmt: skip


def model_view(serving: Serving, model: ModelView, full: bool = False) -> dict[str, Any]:
    """A model with every version, and its serving rules (serving.json)."""
    loaded = [e.version for e in model.served]
    name = model.name
    return {
        "name": name,
        "latest_version": loaded[-1] if loaded else None,
        "default": name == serving.settings.default_model,
        "serving": {**model.config.to_dict(), "problems": list(model.problems)},
        "versions": [version_view(e, full, model) for e in model.entries.values()],
    }


def list_models(serving: Serving, request: Request) -> Response:
    """GET /models."""
    models = serving.registry.models  # one snapshot
    return json_response({
        "default_model": serving.settings.default_model or None,
        "models": [model_view(serving, models[name]) for name in sorted(models)],
    })  # fmt: skip


def get_model(serving: Serving, request: Request) -> Response:
    """GET /models/{model}."""
    return json_response(model_view(serving, serving.registry.view(request.params["model"])))


def get_version(serving: Serving, request: Request) -> Response:
    """GET /models/{model}/versions/{version} (a number or a label)."""
    model = serving.registry.view(request.params["model"])
    entry = serving.registry.find_in(model, request.params["version"])
    return json_response(version_view(entry, True, model))


def control(serving: Serving, request: Request) -> Response:
    """POST /models/{model}/load | /unload: serve a model again (re-reading its folder) or
    stop serving it, in every worker. 200 with the model as this worker now serves it;
    a load where no version could be loaded is a 422 that says why."""
    name, action = request.params["model"], request.path.rsplit("/", 1)[1]
    lifecycle = serving.lifecycle
    model = lifecycle.load(name) if action == "load" else lifecycle.unload(name)
    if action == "load" and not model.served:
        raise ValidationFailed(
            f"model {name!r}: no version could be loaded",
            details={str(e.version): e.error for e in model.entries.values()},
        )
    return json_response(model_view(serving, model))


def live(serving: Serving, request: Request) -> Response:
    """GET /health/live."""
    return json_response({"status": "alive"})


def ready(serving: Serving, request: Request) -> Response:
    """GET /health/ready: 200 when servable, 503 with the reason otherwise. The route is
    open (probes carry no key); with API keys on, the reason and the model list (what the
    repository holds, what failed and why) go only to a key with the ``read`` scope."""
    registry = serving.registry
    is_ready, reason = registry.readiness()
    if metrics.unavailable():
        reason += f"; metrics unavailable: {metrics.unavailable()}"
    body: dict[str, Any] = {"status": "ready" if is_ready else "not_ready", "reason": reason,
                            "models": {f"{e.name}/{e.version}": e.status
                                       for e in registry.select()}}  # fmt: skip
    if serving.auth.enabled:
        try:
            serving.auth.check(request.environ, "read")
        except ApiError:
            body = {"status": body["status"],
                    "reason": "details need an API key with the read scope"}  # fmt: skip
    return json_response(body, 200 if is_ready else 503)


# --- the route table -------------------------------------------------------------------------

_ERRORS = {str(s): {"description": d, "content": {"application/json": {"schema": ApiErrorSchema}}}
           for s, d in ((400, "Malformed request"), (404, "Unknown model or version"),
                        (409, "The default model cannot be unloaded"),
                        (413, "Body or image too large"), (415, "Unsupported Content-Type"),
                        (422, "Invalid content"), (503, "Model unavailable"))}  # fmt: skip
_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": PredictJSONSchema},
        "multipart/form-data": {"schema": PredictFormSchema},
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
    },
}
_TAG = ["native"]


def _ok(schema: type[Schema], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _predict_doc(summary: str) -> dict[str, Any]:
    return {
        "tags": _TAG,
        "summary": summary,
        "description": "Probabilities are the softmax (sigmoid for a binary model) of the "
        "model's logits, every class named, best first.",
        "parameters": [{"in": "query", "schema": PredictOptionsSchema}],  # one per option
        "requestBody": _PREDICT_BODY,
        "responses": {"200": _ok(PredictResponseSchema), **_ERRORS},
    }


def _get_doc(summary: str, schema: type[Schema], errors: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"tags": _TAG, "summary": summary,
            "responses": {"200": _ok(schema), **{s: _ERRORS[s] for s in errors}}}  # fmt: skip


ROUTES = [
    Route("POST", "/predict", predict, PROTOCOL,
          _predict_doc("Predict with the model named in the body or query (or the default)"),
          "predict"),
    *versioned("POST", "/models/{model}", "/predict", predict, PROTOCOL,
               _predict_doc("Predict with a model (the version its weights pick, else its "
                            "latest; or the version or label named)"), "predict"),
    Route("GET", "/models", list_models, PROTOCOL,
          _get_doc("Every model and version: status, provider, classes, input, test metrics",
                   ModelsSchema)),
    Route("GET", "/models/{model}", get_model, PROTOCOL,
          _get_doc("One model and its versions", ModelSchema, ("404",))),
    Route("GET", "/models/{model}/versions/{version}", get_version, PROTOCOL,
          _get_doc("One version (a number or a label), with its whole metadata.json",
                   ModelVersionSchema, ("404",))),
    Route("GET", "/models/{model}/versions/{version}/report/{filename}", get_report_file,
          PROTOCOL, {
              "tags": _TAG, "summary": "A file of the version's training report (plots, "
              "README), as listed in the version's 'report'",
              "responses": {"200": {"description": "The file", "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "text/markdown": {"schema": {"type": "string"}}}},
                  "404": _ERRORS["404"]}}),
    *(Route("POST", f"/models/{{model}}/{action}", control, PROTOCOL,
            {**_get_doc(summary, ModelSchema, errors), "tags": ["model control"]}, "admin")
      for action, summary, errors in (
          ("load", "Serve a model (again), re-reading its folder, in every worker",
           ("404", "422")),
          ("unload", "Stop serving every version of a model, in every worker",
           ("404", "409")))),
    Route("GET", "/health/live", live, PROTOCOL,
          _get_doc("200 while the process can answer", HealthSchema), None),
    Route("GET", "/health/ready", ready, PROTOCOL,
          {**_get_doc("200 when the models are servable; 503 with the reason otherwise",
                      HealthSchema),
           "responses": {"200": _ok(HealthSchema), "503": _ok(HealthSchema, "Not ready")}},
          None),
]  # fmt: skip
