"""TensorFlow Serving's REST API under /v1: status, metadata, :predict and :classify.

``:predict`` takes the row format (``instances``) or the columnar one (``inputs``): images in
the model's input units (what the SavedModel would take), feature vectors as raw values
(standardised here when the model was trained so), or ``{"b64": ...}`` images, and
returns the probabilities, as a Keras model ending in softmax would to TF Serving users.
``:classify`` takes ``examples`` keyed by the model's feature names (or one ``{"b64"}``
image each) and returns ``[label, score]`` pairs in class order. Errors are
``{"error": "<message>"}``: 400 for malformed requests, 404 for unknown models.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from service.contract.metadata import version_number
from service.contract.preprocessing import FeatureSpec, ImageSpec
from service.errors import BadRequest, VersionNotFound
from service.http.messages import Request, Response, json_response
from service.http.routing import Protocol, versioned
from service.inference.dataplane import InferRequest, InferResult
from service.inference.inputs import (
    JsonInstances,
    ModelTensor,
    NamedRows,
    by_feature,
    check_numbers,
    is_b64_object,
    parse_json,
)
from service.models.registry import ModelEntry
from service.models.serving_config import LABEL
from service.protocols.message_error import (
    IMAGE_INPUT,
    MALFORMED,
    UNKNOWN,
    json_body,
    operation,
    render_message_error,
)
from service.protocols.serving import Serving

PROTOCOL = Protocol("tfserving", "/v1", render_message_error)


# --- status and metadata ---------------------------------------------------------------------


def _version_status(entry: ModelEntry) -> dict[str, Any]:
    if entry.loaded:
        return {
            "version": str(entry.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    return {
        "version": str(entry.version),
        "state": "END",
        "status": {"error_code": "UNKNOWN", "error_message": entry.error or ""},
    }


def _version(serving: Serving, request: Request) -> int | str | None:
    """The version a path names: ``/versions/{number}``, ``/labels/{label}``, or none."""
    params, name = request.params, request.params["model"]
    if "label" in params:
        if not LABEL.fullmatch(params["label"]):
            serving.registry.model(name)  # an unknown model is a 404 first
            raise VersionNotFound(f"model {name!r} has no label {params['label']!r}")
        return params["label"]
    if "version" in params:
        number = version_number(params["version"])
        if number is None:
            serving.registry.model(name)
            raise VersionNotFound(
                f"model {name!r} has no version {params['version']!r}; a version is a "
                "number (labels go in /labels/{label})"
            )
        return number
    return None


def status(serving: Serving, request: Request) -> Response:
    """GET /v1/models/{model}[/versions/{version} | /labels/{label}]."""
    model, version = serving.registry.model(request.params["model"]), _version(serving, request)
    entries = list(model.entries.values()) if version is None else [model.version(version)]
    return json_response({"model_version_status": [_version_status(e) for e in reversed(entries)]})


def _tensor_info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "name": f"{name}:0",
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in dims],
            "unknown_rank": False,
        },
    }


def metadata(serving: Serving, request: Request) -> Response:
    """GET /v1/models/{model}[/versions/{version}]/metadata: the model's signature."""
    entry = serving.registry.version(request.params["model"], _version(serving, request))
    meta = entry.metadata
    signature = {
        "inputs": {
            meta["input"]["name"]: _tensor_info(
                meta["input"]["name"], "DT_FLOAT", [-1, *meta["input"]["shape"][1:]]
            )
        },
        "outputs": {
            "probabilities": _tensor_info("probabilities", "DT_FLOAT", [-1, len(meta["classes"])])
        },
        "method_name": "tensorflow/serving/predict",
    }
    return json_response(
        {
            "model_spec": {"name": entry.name, "signature_name": "", "version": str(entry.version)},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        }
    )


# --- predict and classify --------------------------------------------------------------------


def _document(request: Request, allowed: set[str]) -> dict[str, Any]:
    document = parse_json(request.body())
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = set(document) - allowed - {"signature_name"}
    if unknown:
        raise BadRequest(f"unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}")
    signature = document.get("signature_name", "serving_default")
    if signature not in ("", "serving_default"):
        raise BadRequest(f"signature_name {signature!r} not found; the model has 'serving_default'")
    return document


def _images(entry: ModelEntry, items: list[Any], where: str) -> JsonInstances:
    """``{"b64": ...}`` images, decoded and preprocessed as the native API's."""
    if not isinstance(entry.spec, ImageSpec):
        raise BadRequest(f"model {entry.name!r} takes feature vectors, not b64 images")
    return JsonInstances(where, items)


def _batch(entry: ModelEntry, name: str | None, items: Any, where: str):
    """A batch of values in the model's units, or of b64 images, as the dataplane's input."""
    accepted = [entry.metadata["input"]["name"]]
    if isinstance(entry.spec, ImageSpec):
        accepted.append(IMAGE_INPUT)
    if name is not None and name not in accepted:
        features = (
            f", or its features by name ({', '.join(c.name for c in entry.spec.raw_columns)})"
            if isinstance(entry.spec, FeatureSpec)
            else ""
        )
        raise BadRequest(
            f"unknown input {name!r}; model {entry.name!r} takes "
            + " or ".join(map(repr, accepted))
            + features
        )
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{where} must be a non-empty list (the batch)")
    b64 = [is_b64_object(item) for item in items]
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
        raise BadRequest(
            "give exactly one of 'instances' (row format) or 'inputs' (columnar format)"
        )
    if "instances" in document:
        instances = document["instances"]
        if (
            isinstance(instances, list)
            and instances
            and all(isinstance(v, dict) and not is_b64_object(v) for v in instances)
        ):  # named inputs: [{"input": ...}, ...]
            if _by_feature(entry, set().union(*instances)):
                return NamedRows(
                    lambda: [_unwrapped(v) for v in instances], "instances", len(instances)
                )
            names = {tuple(v) for v in instances}
            if len(names) != 1 or len(next(iter(names))) != 1:
                raise BadRequest("every instance must name the same one input")
            (name,) = next(iter(names))
            return _batch(entry, name, [v[name] for v in instances], "instances")
        spec = entry.spec
        if (
            isinstance(spec, FeatureSpec)
            and not spec.plain
            and isinstance(instances, list)
            and instances
            and all(isinstance(v, list) for v in instances)
        ):  # a table's raw values in the columns' order
            return NamedRows(instances, "instances")
        return _batch(entry, None, instances, "instances")
    columns = document["inputs"]
    if isinstance(columns, dict) and not is_b64_object(columns):
        if _by_feature(entry, set(columns)):
            return _rows(columns)
        if len(columns) != 1:
            raise BadRequest(f"model {entry.name!r} takes one input; got {sorted(columns)}")
        ((name, batch),) = columns.items()
        return _batch(entry, name, batch, f"inputs.{name}")
    return _batch(entry, None, columns, "inputs")


def _rows(columns: dict[str, Any]) -> NamedRows:
    """The columnar format's features (a list of values each, a value a one-element list
    or not) as rows, made once their count fits the model's limits."""
    sizes = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if len(sizes) != 1 or -1 in sizes or 0 in sizes:
        raise BadRequest("every feature in 'inputs' must be a non-empty list of the same length")
    (n,) = sizes

    def rows() -> list[dict[str, Any]]:
        return [_unwrapped({name: values[i] for name, values in columns.items()}) for i in range(n)]

    return NamedRows(rows, "row", n)


def _resolve(serving: Serving, request: Request) -> ModelEntry:
    return serving.registry.version(request.params["model"], _version(serving, request))


def _infer(serving: Serving, request: Request, keys: set[str], decode) -> tuple[dict, InferResult]:
    """Resolve the model, read the body (``keys`` allowed), decode its inputs, run them."""
    started = time.perf_counter()
    entry = _resolve(serving, request)
    document = _document(request, keys)
    inputs = decode(entry, document)
    return document, serving.dataplane.infer(InferRequest(inputs, started=started, entry=entry))


def predict(serving: Serving, request: Request) -> Response:
    """POST /v1/models/{model}[/versions/{version}]:predict -> the probabilities."""
    document, result = _infer(serving, request, {"instances", "inputs"}, _inputs)
    key = "predictions" if "instances" in document else "outputs"
    return json_response(
        {key: result.probabilities}, model=result.entry.ref, instances=result.instances
    )


def _examples(entry: ModelEntry, document: dict[str, Any]):
    examples, context = document.get("examples"), document.get("context", {})
    if not isinstance(examples, list) or not examples:
        raise BadRequest("'examples' must be a non-empty list of objects")
    if not isinstance(context, dict) or not all(isinstance(e, dict) for e in examples):
        raise BadRequest("'examples' and 'context' must be objects keyed by feature name")
    spec = entry.spec
    if isinstance(spec, FeatureSpec):  # rows are made once their count fits the limits
        return NamedRows(
            lambda: [_unwrapped({**context, **e}) for e in examples], "examples", len(examples)
        )
    merged = [{**context, **example} for example in examples]
    if isinstance(spec, ImageSpec):
        images = []
        for i, example in enumerate(merged):
            values = [v for v in example.values() if is_b64_object(v)]
            if len(values) != 1 or len(example) != 1:
                raise BadRequest(f'examples[{i}] must hold one image: {{"image": {{"b64": ...}}}}')
            images.append(values[0])
        return _images(entry, images, "examples")
    raise BadRequest(f"model {entry.name!r} takes neither features nor images")


def _unwrapped(row: dict[str, Any]) -> dict[str, Any]:
    """tf.Example features are lists: a one-element list is its value."""
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in row.items()}


def _by_feature(entry: ModelEntry, names: set[str]) -> bool:
    return by_feature(entry.spec, entry.metadata["input"]["name"], names)


def classify(serving: Serving, request: Request) -> Response:
    """POST /v1/models/{model}[/versions/{version}]:classify -> [[label, score], ...]."""
    _, result = _infer(serving, request, {"examples", "context"}, _examples)
    rows = [
        [[c, float(p)] for c, p in zip(result.classes, row, strict=True)]
        for row in result.probabilities
    ]
    return json_response({"result": rows}, model=result.entry.ref, instances=result.instances)


def regress(serving: Serving, request: Request) -> Response:
    """POST ...:regress: these models are classifiers."""
    entry = _resolve(serving, request)
    raise BadRequest(f"model {entry.name!r} is a classifier: use :predict or :classify")


# --- the route table -------------------------------------------------------------------------

_TAG = "TensorFlow Serving REST"
_M = "/v1/models/{model}"

ROUTES = [
    *versioned(
        "GET",
        _M,
        "",
        status,
        PROTOCOL,
        operation(_TAG, "Model version status", UNKNOWN),
        labels=True,
    ),
    *versioned(
        "GET",
        _M,
        "/metadata",
        metadata,
        PROTOCOL,
        operation(_TAG, "The serving_default signature", UNKNOWN),
        labels=True,
    ),
    *versioned(
        "POST",
        _M,
        ":predict",
        predict,
        PROTOCOL,
        operation(
            _TAG,
            "Predict: probabilities (row or columnar format)",
            MALFORMED,
            UNKNOWN,
            body=json_body("TFServingPredict"),
        ),
        "predict",
        labels=True,
    ),
    *versioned(
        "POST",
        _M,
        ":classify",
        classify,
        PROTOCOL,
        operation(
            _TAG,
            "Classify examples keyed by feature name: [label, score] pairs",
            MALFORMED,
            UNKNOWN,
            body=json_body("TFServingClassify"),
        ),
        "predict",
        labels=True,
    ),
    *versioned("POST", _M, ":regress", regress, PROTOCOL, None, "predict", labels=True),
]

SCHEMAS = {
    "TFServingPredict": {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string"},
            "instances": {"type": "array", "items": {}},
            "inputs": {},
        },
    },
    "TFServingClassify": {
        "type": "object",
        "required": ["examples"],
        "properties": {
            "signature_name": {"type": "string"},
            "context": {"type": "object"},
            "examples": {"type": "array", "items": {"type": "object"}},
        },
    },
}
