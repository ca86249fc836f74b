"""TensorFlow Serving's REST API under /v1: status, metadata, :predict and :classify.

``:predict`` takes the row format (``instances``) or the columnar one (``inputs``), values in
the model's input units (what the SavedModel would take) or ``{"b64": ...}`` images, and
returns the probabilities, as a Keras model ending in softmax would to TF Serving users.
``:classify`` takes ``examples`` keyed by the model's feature names (or one ``{"b64"}``
image each) and returns ``[label, score]`` pairs in class order. Errors are
``{"error": "<message>"}``: 400 for malformed requests, 404 for unknown models.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from service.context import Serving
from service.dataplane import InferRequest
from service.errors import ApiError, BadRequest
from service.images import decode_base64
from service.inputs import EncodedImages, ModelTensor, check_numbers, parse_json
from service.preprocessing import FeatureSpec, ImageSpec
from service.registry import ModelEntry
from service.routing import Protocol, Route
from service.web import Request, Response, json_response

IMAGE_INPUT = "image"


def render_error(error: ApiError, request_id: str) -> tuple[int, dict[str, Any]]:
    """``{"error": message}``; content errors (422 natively) are 400, as TF Serving says."""
    return (400 if error.status == 422 else error.status), {"error": error.message}


PROTOCOL = Protocol("tfserving", "/v1", render_error)


# --- status and metadata ---------------------------------------------------------------------


def _version_status(entry: ModelEntry) -> dict[str, Any]:
    if entry.loaded:
        return {"version": str(entry.version), "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}  # fmt: skip
    return {"version": str(entry.version), "state": "END",
            "status": {"error_code": "UNKNOWN", "error_message": entry.error or ""}}  # fmt: skip


def status(serving: Serving, request: Request) -> Response:
    """GET /v1/models/{model}[/versions/{version}]."""
    registry, params = serving.registry, request.params
    if "version" in params:
        entries = [registry.find(params["model"], params["version"])]
    else:
        registry.find(params["model"])  # 404 when unknown
        entries = list(reversed(registry.versions_of(params["model"])))
    return json_response({"model_version_status": [_version_status(e) for e in entries]})


def _tensor_info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {"dtype": dtype, "name": f"{name}:0",
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                             "unknown_rank": False}}  # fmt: skip


def metadata(serving: Serving, request: Request) -> Response:
    """GET /v1/models/{model}[/versions/{version}]/metadata: the model's signature."""
    entry = serving.dataplane.resolve(request.params["model"], request.params.get("version"))
    meta = entry.metadata
    signature = {
        "inputs": {meta["input"]["name"]: _tensor_info(meta["input"]["name"], "DT_FLOAT",
                                                       [-1, *meta["input"]["shape"][1:]])},
        "outputs": {"probabilities": _tensor_info("probabilities", "DT_FLOAT",
                                                  [-1, len(meta["classes"])])},
        "method_name": "tensorflow/serving/predict",
    }  # fmt: skip
    return json_response({
        "model_spec": {"name": entry.name, "signature_name": "", "version": str(entry.version)},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
    })  # fmt: skip


# --- predict and classify --------------------------------------------------------------------


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _document(request: Request, allowed: set[str]) -> dict[str, Any]:
    document = parse_json(request.body())
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = set(document) - allowed - {"signature_name"}
    if unknown:
        raise BadRequest(f"unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}")
    signature = document.get("signature_name", "serving_default")
    if signature not in ("", "serving_default"):
        raise BadRequest(f"signature_name {signature!r} not found; the model has "
                         "'serving_default'")  # fmt: skip
    return document


def _images(entry: ModelEntry, items: list[Any], where: str) -> EncodedImages:
    if not isinstance(entry.spec, ImageSpec):
        raise BadRequest(f"model {entry.name!r} takes feature vectors, not b64 images")
    blobs = []
    for i, item in enumerate(items):
        if not isinstance(item["b64"], str):
            raise BadRequest(f"{where}[{i}].b64 must be a base64 string")
        blobs.append((f"{where}[{i}]", decode_base64(item["b64"], f"{where}[{i}]")))
    return EncodedImages(blobs)


def _batch(entry: ModelEntry, name: str | None, items: Any, where: str):
    """A batch of values in the model's units, or of b64 images, as the dataplane's input."""
    input_name = entry.metadata["input"]["name"]
    if name is not None and name not in (input_name, IMAGE_INPUT):
        raise BadRequest(f"unknown input {name!r}; model {entry.name!r} takes {input_name!r}")
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{where} must be a non-empty list (the batch)")
    b64 = [_is_b64(item) for item in items]
    if all(b64):
        return _images(entry, items, where)
    if any(b64):
        raise BadRequest(f"{where} mixes b64 images and values")
    check_numbers(items, where)
    try:
        with np.errstate(over="ignore"):  # beyond float32's range -> inf, refused downstream
            array = np.asarray(items, dtype=np.float32)
    except ValueError:
        raise BadRequest(f"{where} is ragged: every instance must have the same shape") from None
    return ModelTensor(array, where)


def _inputs(entry: ModelEntry, document: dict[str, Any]):
    if ("instances" in document) == ("inputs" in document):
        raise BadRequest("give exactly one of 'instances' (row format) or 'inputs' "
                         "(columnar format)")  # fmt: skip
    if "instances" in document:
        instances = document["instances"]
        if (
            isinstance(instances, list)
            and instances
            and all(isinstance(v, dict) and not _is_b64(v) for v in instances)
        ):  # named inputs: [{"input": ...}, ...]
            names = {tuple(v) for v in instances}
            if len(names) != 1 or len(next(iter(names))) != 1:
                raise BadRequest("every instance must name the same one input")
            (name,) = next(iter(names))
            return _batch(entry, name, [v[name] for v in instances], "instances")
        return _batch(entry, None, instances, "instances")
    columns = document["inputs"]
    if isinstance(columns, dict) and not _is_b64(columns):
        if len(columns) != 1:
            raise BadRequest(f"model {entry.name!r} takes one input; got {sorted(columns)}")
        ((name, batch),) = columns.items()
        return _batch(entry, name, batch, f"inputs.{name}")
    return _batch(entry, None, columns, "inputs")


def _resolve(serving: Serving, request: Request) -> ModelEntry:
    return serving.dataplane.resolve(request.params["model"], request.params.get("version"))


def predict(serving: Serving, request: Request) -> Response:
    """POST /v1/models/{model}[/versions/{version}]:predict -> the probabilities."""
    started = time.perf_counter()
    entry = _resolve(serving, request)
    document = _document(request, {"instances", "inputs"})
    inputs = _inputs(entry, document)
    result = serving.dataplane.infer(InferRequest(inputs, started=started, entry=entry))
    key = "predictions" if "instances" in document else "outputs"
    return json_response({key: result.probabilities}, entry=entry, instances=result.instances)


def _examples(entry: ModelEntry, document: dict[str, Any]):
    examples, context = document.get("examples"), document.get("context", {})
    if not isinstance(examples, list) or not examples:
        raise BadRequest("'examples' must be a non-empty list of objects")
    if not isinstance(context, dict) or not all(isinstance(e, dict) for e in examples):
        raise BadRequest("'examples' and 'context' must be objects keyed by feature name")
    merged = [{**context, **example} for example in examples]
    spec = entry.spec
    if isinstance(spec, ImageSpec):
        images = []
        for i, example in enumerate(merged):
            values = [v for v in example.values() if _is_b64(v)]
            if len(values) != 1 or len(example) != 1:
                raise BadRequest(f'examples[{i}] must hold one image: {{"image": {{"b64": ...}}}}')
            images.append(values[0])
        return _images(entry, images, "examples")
    assert isinstance(spec, FeatureSpec)
    names, rows = spec.feature_names, []
    for i, example in enumerate(merged):
        unknown, missing = set(example) - set(names), [n for n in names if n not in example]
        if unknown or missing:
            raise BadRequest(f"examples[{i}]: the model's features are {', '.join(names)}"
                             + (f"; unknown {sorted(unknown)}" if unknown else "")
                             + (f"; missing {missing}" if missing else ""))  # fmt: skip
        row = []
        for name in names:
            value = example[name]
            if isinstance(value, list) and len(value) == 1:  # tf.Example features are lists
                value = value[0]
            if type(value) not in (int, float):
                raise BadRequest(f"examples[{i}].{name} must be a number")
            row.append(value)
        rows.append(row)
    return _batch(entry, None, rows, "examples")


def classify(serving: Serving, request: Request) -> Response:
    """POST /v1/models/{model}[/versions/{version}]:classify -> [[label, score], ...]."""
    started = time.perf_counter()
    entry = _resolve(serving, request)
    document = _document(request, {"examples", "context"})
    inputs = _examples(entry, document)
    result = serving.dataplane.infer(InferRequest(inputs, started=started, entry=entry))
    classes = result.classes
    rows = [[[c, float(p)] for c, p in zip(classes, row, strict=True)]
            for row in result.probabilities]  # fmt: skip
    return json_response({"result": rows}, entry=entry, instances=result.instances)


def regress(serving: Serving, request: Request) -> Response:
    """POST ...:regress: these models are classifiers."""
    entry = _resolve(serving, request)
    raise BadRequest(f"model {entry.name!r} is a classifier: use :predict or :classify")


# --- the route table -------------------------------------------------------------------------

_TAG = ["TensorFlow Serving REST"]
_ERROR = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageError"}}}
}


def _doc(summary: str, *errors: tuple[str, str], body: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": _TAG,
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
            **{status: {"description": why, **_ERROR} for status, why in errors},
        },
    }
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}  # fmt: skip
    return operation


_UNKNOWN = ("404", "Unknown model or version")
_BAD = ("400", "Malformed request")
_M, _MV = "/v1/models/{model}", "/v1/models/{model}/versions/{version}"

ROUTES = [
    Route("GET", _M, status, PROTOCOL, _doc("Model version status", _UNKNOWN)),
    Route("GET", _MV, status, PROTOCOL, _doc("One version's status", _UNKNOWN)),
    Route("GET", _M + "/metadata", metadata, PROTOCOL, _doc("Signature", _UNKNOWN)),
    Route("GET", _MV + "/metadata", metadata, PROTOCOL, _doc("One version's signature",
                                                             _UNKNOWN)),
    Route("POST", _M + ":predict", predict, PROTOCOL,
          _doc("Predict: probabilities (row or columnar format)", _BAD, _UNKNOWN,
               body="TFServingPredict")),
    Route("POST", _MV + ":predict", predict, PROTOCOL,
          _doc("Predict with one version", _BAD, _UNKNOWN, body="TFServingPredict")),
    Route("POST", _M + ":classify", classify, PROTOCOL,
          _doc("Classify examples keyed by feature name: [label, score] pairs", _BAD,
               _UNKNOWN, body="TFServingClassify")),
    Route("POST", _MV + ":classify", classify, PROTOCOL,
          _doc("Classify with one version", _BAD, _UNKNOWN, body="TFServingClassify")),
    Route("POST", _M + ":regress", regress, PROTOCOL),
    Route("POST", _MV + ":regress", regress, PROTOCOL),
]  # fmt: skip

SCHEMAS = {
    "TFServingPredict": {
        "type": "object",
        "properties": {"signature_name": {"type": "string"},
                       "instances": {"type": "array", "items": {}},
                       "inputs": {}},
    },
    "TFServingClassify": {
        "type": "object",
        "required": ["examples"],
        "properties": {"signature_name": {"type": "string"},
                       "context": {"type": "object"},
                       "examples": {"type": "array", "items": {"type": "object"}}},
    },
}  # fmt: skip
