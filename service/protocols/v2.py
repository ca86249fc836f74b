"""The Open Inference Protocol (KServe V2, as Triton and ``tritonclient`` speak it) under /v2.

Inputs: the model's own tensor (its ONNX name, FP32, already scaled) or, for image models,
``image``: BYTES elements that are encoded image files, preprocessed like native uploads.
Outputs: ``logits``, ``probabilities`` and ``label``; the classification extension turns
any of them into ``"<score>:<index>:<label>"`` strings, best first. Errors are
``{"error": "<message>"}``: 400 for every malformed request, 404 for unknown models.
"""

from __future__ import annotations

import time
from importlib import metadata as package_metadata
from typing import Any

import numpy as np
import orjson

from service.contract.postprocessing import top_k
from service.contract.preprocessing import FeatureSpec, ImageSpec
from service.errors import BadRequest
from service.http.messages import Request, Response, json_response
from service.http.routing import Protocol, Route, versioned
from service.inference import statistics
from service.inference.dataplane import InferRequest, InferResult
from service.inference.inputs import EncodedImages, ModelTensor, NamedRows, by_feature
from service.keys import DETAILS_NEED_READ
from service.models.registry import ModelEntry
from service.protocols import v2_tensors as tensors
from service.protocols.message_error import (
    IMAGE_INPUT,
    MALFORMED,
    UNKNOWN,
    json_body,
    operation,
    render_message_error,
)
from service.protocols.serving import Serving

SERVER_NAME = "keras-classifier-serving"
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
]
OUTPUTS = ("logits", "probabilities", "label")
PLATFORM = "onnxruntime_onnx"


PROTOCOL = Protocol("v2", "/v2", render_message_error)


def _server_version() -> str:
    try:
        return package_metadata.version(SERVER_NAME)
    except package_metadata.PackageNotFoundError:
        return "unknown"


# --- server and model metadata ---------------------------------------------------------------


def server_metadata(serving: Serving, request: Request) -> Response:
    """GET /v2."""
    return json_response(
        {"name": SERVER_NAME, "version": _server_version(), "extensions": EXTENSIONS}
    )


def live(serving: Serving, request: Request) -> Response:
    """GET /v2/health/live."""
    return json_response({"live": True})


def ready(serving: Serving, request: Request) -> Response:
    """GET /v2/health/ready: 200 when servable, else 400 with the reason (the V2 spec: 4xx).
    Open, like /health/ready, and like it: with API keys on, the reason (which names models
    and folders) goes only to a key with the ``read`` scope."""
    is_ready, reason = serving.registry.readiness()
    if is_ready:
        return json_response({"ready": True})
    if not serving.auth.permits(request.environ, "read"):
        reason = DETAILS_NEED_READ
    return json_response({"ready": False, "error": reason}, 400)


def _entry(serving: Serving, request: Request) -> ModelEntry:
    return serving.registry.version(
        request.params["model"], request.params.get("version"), servable=False
    )


def _inputs(entry: ModelEntry) -> list[dict[str, Any]]:
    meta = entry.metadata
    shape = [-1, *meta["input"]["shape"][1:]]
    if isinstance(entry.spec, FeatureSpec) and not entry.spec.plain:
        return _feature_inputs(entry.spec)
    described = [{"name": meta["input"]["name"], "datatype": "FP32", "shape": shape}]
    if meta["preprocessing"]["kind"] == "image":
        described.append({"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]})
    return described


def _output_names(entry: ModelEntry) -> tuple[str, ...]:
    """A model that outputs probabilities itself has no logits to show."""
    return OUTPUTS if entry.output.has_logits else OUTPUTS[1:]


def _outputs(entry: ModelEntry) -> list[dict[str, Any]]:
    meta = entry.metadata
    described = [
        {"name": "logits", "datatype": "FP32", "shape": [-1, meta["output"]["shape"][-1]]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(meta["classes"])]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    return [d for d in described if d["name"] in _output_names(entry)]


def _servable(serving: Serving, request: Request) -> ModelEntry:
    return serving.registry.version(request.params["model"], request.params.get("version"))


def model_metadata(serving: Serving, request: Request) -> Response:
    """GET /v2/models/{model}[/versions/{version}]."""
    entry = _servable(serving, request)
    if "version" in request.params:
        versions = [str(entry.version)]
    else:
        versions = [str(e.version) for e in serving.registry.model(entry.name).served]
    meta = entry.metadata
    return json_response(
        {
            "name": entry.name,
            "versions": versions,
            "platform": PLATFORM,
            "inputs": _inputs(entry),
            "outputs": _outputs(entry),
            "parameters": {
                "task": meta["task"],
                "classes": meta["classes"],
                "preprocessing": meta["preprocessing"],
                "provider": entry.provider,
            },
        }
    )


def model_config(serving: Serving, request: Request) -> Response:
    """GET /v2/models/{model}[/versions/{version}]/config: Triton's model configuration."""
    entry = _servable(serving, request)
    types = {"FP32": "TYPE_FP32", "BYTES": "TYPE_STRING"}
    config: dict[str, Any] = {
        "name": entry.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": serving.dataplane.limits.of(entry.name).max_instances,
        "input": [
            {"name": t["name"], "data_type": types[t["datatype"]], "dims": t["shape"][1:] or [1]}
            for t in _inputs(entry)
        ],
        "output": [
            {"name": t["name"], "data_type": types[t["datatype"]], "dims": t["shape"][1:] or [1]}
            for t in _outputs(entry)
        ],
        "instance_group": [
            {
                "count": serving.settings.workers,
                "kind": "KIND_GPU" if entry.provider == "CUDAExecutionProvider" else "KIND_CPU",
            }
        ],
    }
    if entry.batcher is not None:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": entry.batcher.config.max_delay_us,
            "preferred_batch_size": [entry.batcher.config.max_batch_size],
        }
    return json_response(config)


def model_ready(serving: Serving, request: Request) -> Response:
    """GET /v2/models/{model}[/versions/{version}]/ready: 200, or 400 with why not."""
    entry = _entry(serving, request)
    if entry.loaded:
        return json_response({"name": entry.name, "ready": True})
    why = f"failed to load: {entry.error}" if entry.status == "failed" else entry.error
    return json_response({"name": entry.name, "ready": False, "error": why}, 400)


def repository_index(serving: Serving, request: Request) -> Response:
    """POST /v2/repository/index: every model version and its state (``{"ready": true}``
    lists only the servable ones; tritonclient posts an empty body). A model with no
    version in the repository is listed by name alone, as Triton lists it; so is a model
    folder not loaded yet (explicit model control: added since the start), which the load
    API can load: the index is every model the repository holds, loaded or not."""
    only_ready = _options(request, {"ready": bool}).get("ready", False)
    index = []
    not_loaded = {} if only_ready else serving.lifecycle.not_loaded()
    for name in sorted({*serving.registry.names(), *not_loaded}):
        if name in not_loaded:
            index.append({"name": name, "state": "UNAVAILABLE", "reason": not_loaded[name]})
            continue
        view = serving.registry.models.get(name)
        entries = view.entries.values() if view else ()
        for entry in entries:
            if only_ready and not entry.loaded:
                continue
            reason = "" if entry.loaded else (entry.error or entry.status)
            index.append(
                {
                    "name": entry.name,
                    "version": str(entry.version),
                    "state": _STATES.get(entry.status, "UNAVAILABLE"),
                    "reason": reason,
                }
            )
        if not entries and not only_ready:
            index.append({"name": name, "state": "UNAVAILABLE", "reason": "no versions"})
    return json_response(index)


_STATES = {"loaded": "READY", "failed": "UNAVAILABLE", "unloaded": "UNAVAILABLE"}


def model_control(serving: Serving, request: Request) -> Response:
    """POST /v2/repository/models/{model}/load|unload (Triton's model-repository
    extension): every worker follows. A load answers once this worker has loaded the model:
    400 with the reasons when no version of it could be loaded."""
    name, action = request.params["model"], request.path.rsplit("/", 1)[1]
    parameters = _options(request, {"parameters": dict}).get("parameters", {})
    # tritonclient's unload sends unload_dependents (there are no dependents here); its load
    # sends a config or files only when asked to override the model's own.
    if set(parameters) - {"unload_dependents"}:
        raise BadRequest(
            "load parameters (configuration or file overrides) are not "
            "supported: a model is its folder (metadata.json, "
            "serving.json)"
        )
    lifecycle = serving.lifecycle
    view = lifecycle.load(name) if action == "load" else lifecycle.unload(name)
    if action == "load" and not view.served:
        reasons = "; ".join(f"v{e.version}: {e.error}" for e in view.entries.values())
        raise BadRequest(f"failed to load {name!r}: {reasons or 'it has no versions'}")
    return json_response({})


def _options(request: Request, allowed: dict[str, type]) -> dict[str, Any]:
    """A control request's optional JSON object body (empty is ``{}``)."""
    body = request.body()
    if not body.strip():
        return {}
    options = tensors.json_object(body, "the request body")
    for key, value in options.items():
        if key not in allowed or type(value) is not allowed[key]:
            expected = ", ".join(f"{k!r}: {t.__name__}" for k, t in allowed.items())
            raise BadRequest(f"unexpected {key!r} in the body; it may hold {expected}")
    return options


def stats(serving: Serving, request: Request) -> Response:
    """GET /v2/models[/{model}[/versions/{version}]]/stats, summed over all workers."""
    name, version = request.params.get("model"), request.params.get("version")
    if name is None:
        entries = serving.registry.entries
    elif version is None:
        entries = list(serving.registry.model(name).entries.values())
    else:
        entries = [serving.registry.version(name, version, servable=False)]
    return json_response({"model_stats": statistics.model_stats(entries)})


# --- infer -----------------------------------------------------------------------------------


_FEATURE_DATATYPE = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
_NUMBERS = ("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64")
_NUMBERS += ("UINT8", "UINT16", "UINT32", "UINT64")
# what each kind of feature takes besides its own datatype: numbers of any width (FP32
# rounds a value to 7 digits before standardising), integer codes for categories
_ALSO_ACCEPTED = {"numeric": _NUMBERS, "boolean": (), "categorical": _NUMBERS[3:]}


def _feature_inputs(spec: FeatureSpec) -> list[dict[str, Any]]:
    """One ``[batch]`` input per raw feature, as Triton and KServe clients send a table."""
    return [
        {"name": c.name, "datatype": _FEATURE_DATATYPE[c.kind], "shape": [-1]}
        for c in spec.raw_columns
    ]


def _column(tensor: tensors.Tensor, kind: str) -> list[Any]:
    """One feature input's elements as raw values (BYTES as text; NaN is missing)."""
    name, datatype = tensor.name, tensor.datatype
    if datatype != _FEATURE_DATATYPE[kind] and datatype not in _ALSO_ACCEPTED[kind]:
        raise BadRequest(
            f"input {name!r} is a {kind} feature: send {_FEATURE_DATATYPE[kind]}, not {datatype}"
        )
    if datatype == "BYTES":
        try:
            return [v.decode() for v in tensor.data]
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: BYTES must be UTF-8 text") from None
    array = np.asarray(tensor.data).reshape(-1)
    if datatype == "BOOL":
        if tensor.binary and array.view(np.uint8).max(initial=0) > 1:
            raise BadRequest(f"input {name!r}: BOOL elements must be the bytes 0 or 1")
        return array.tolist()
    if datatype.startswith(("INT", "UINT")):
        return array.tolist()  # exact: an integer code stays the integer it was
    return array.astype(np.float64).tolist()


def _named_features(entry: ModelEntry, given: list[tensors.Tensor]) -> NamedRows:
    """One input per feature (any of them may be left out: missing), each [N] or [N, 1]:
    numbers, BOOL, or BYTES text (UTF-8; an empty or ``NA`` element, or NaN, is missing).
    The batch size is checked against the model's limits before any row is built."""
    spec = entry.spec
    assert isinstance(spec, FeatureSpec)
    kinds = {c.name: c.kind for c in spec.raw_columns}
    seen: set[str] = set()
    for tensor in given:
        if tensor.name not in kinds:
            raise BadRequest(
                f"unknown input {tensor.name[:40]!r}; model {entry.name!r} takes one input per "
                "feature: " + ", ".join(kinds)
            )
        if tensor.name in seen:
            raise BadRequest(f"input {tensor.name!r} is given twice")
        seen.add(tensor.name)
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ((), (1,)):
            raise BadRequest(
                f"input {tensor.name!r} must have shape [N] (or [N, 1]), got {list(tensor.shape)}"
            )
    sizes = {t.shape[0] for t in given}
    if len(sizes) != 1:
        raise BadRequest(f"every feature input must have the same batch size; got {sorted(sizes)}")
    (n,) = sizes

    def rows() -> list[dict[str, Any]]:
        columns = {t.name: _column(t, kinds[t.name]) for t in given}
        return [{name: values[i] for name, values in columns.items()} for i in range(n)]

    return NamedRows(rows, "element", count=n)


def _model_input(
    entry: ModelEntry, given: list[tensors.Tensor]
) -> ModelTensor | EncodedImages | NamedRows:
    """The one input the request gives (or, for a table, one per feature), as the
    dataplane's input kind."""
    input_name = entry.metadata["input"]["name"]
    if by_feature(entry.spec, input_name, {t.name for t in given}):
        return _named_features(entry, given)
    accepted = [input_name]
    if isinstance(entry.spec, ImageSpec):
        accepted.append(IMAGE_INPUT)
    names = " or ".join(repr(n) for n in accepted)
    if len(given) != 1:
        raise BadRequest(f"model {entry.name!r} takes one input, {names}; got {len(given)}")
    (tensor,) = given
    if tensor.name == input_name:
        if tensor.datatype != "FP32":
            raise BadRequest(
                f"input {input_name!r} has datatype {tensor.datatype}; the model takes FP32"
            )
        return ModelTensor(tensor.data, f"input {input_name!r}")
    if tensor.name == IMAGE_INPUT and IMAGE_INPUT in accepted:
        if tensor.datatype != "BYTES":
            raise BadRequest(
                f"input {IMAGE_INPUT!r} must be BYTES (encoded image files), got {tensor.datatype}"
            )
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ((), (1,)):
            raise BadRequest(
                f"input {IMAGE_INPUT!r} must have shape [N] (or [N, 1]), got {list(tensor.shape)}"
            )
        if tensor.binary:
            return EncodedImages(
                [(f"{IMAGE_INPUT}[{i}]", data) for i, data in enumerate(tensor.data)]
            )
        # JSON has no bytes: image elements sent as JSON strings are base64 (or data URLs),
        # decoded by the dataplane once their count is known to fit.
        return EncodedImages(
            [(f"{IMAGE_INPUT}[{i}]", data.decode()) for i, data in enumerate(tensor.data)],
            base64=True,
        )
    if isinstance(entry.spec, FeatureSpec):
        names += ", or one input per feature: " + ", ".join(c.name for c in entry.spec.raw_columns)
    raise BadRequest(f"unknown input {tensor.name!r}; model {entry.name!r} takes {names}")


def _requested(document: dict[str, Any], entry: ModelEntry) -> list[tuple[str, bool, int | None]]:
    """(output name, as binary, classification k) for every output to return."""
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    default_binary = parameters.get("binary_data_output", False)
    if type(default_binary) is not bool:
        raise BadRequest("binary_data_output must be true or false")
    requested = document.get("outputs")
    if requested is None or requested == []:
        return [(name, default_binary, None) for name in _output_names(entry)]
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list")
    chosen, seen = [], set()
    for i, spec in enumerate(requested):
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in _output_names(entry):
            raise BadRequest(
                f"unknown output {name!r} in outputs[{i}]; model {entry.name!r} "
                f"has {', '.join(_output_names(entry))}"
            )
        if name in seen:
            raise BadRequest(f"output {name!r} is requested twice")
        seen.add(name)
        options = spec.get("parameters") or {}
        if not isinstance(options, dict):
            raise BadRequest(f"output {name!r}: 'parameters' must be an object")
        binary, k = options.get("binary_data", default_binary), options.get("classification")
        if type(binary) is not bool:
            raise BadRequest(f"output {name!r}: binary_data must be true or false")
        if k is not None and (type(k) is not int or k < 1):
            raise BadRequest(f"output {name!r}: classification must be a positive integer")
        if k is not None and name == "logits" and entry.metadata["output"]["shape"][-1] == 1:
            raise BadRequest(
                "classification of 'logits' needs one logit per class; this "
                "binary model has one: ask it of 'probabilities'"
            )
        chosen.append((name, binary, k))
    return chosen


def _classification(values: np.ndarray, classes: list[str], k: int) -> list[str]:
    """Triton's classification strings, row-major [N, k]: "<value>:<index>:<label>"."""
    index = {c: i for i, c in enumerate(classes)}
    return [
        f"{np.float32(v)!s}:{index[c]}:{c}"
        for row in top_k(values, classes, min(k, len(classes)))
        for c, v in row
    ]


def _encode(result: InferResult, name: str, binary: bool, k: int | None):
    classes, n = result.classes, result.instances
    if k is not None:
        values = result.logits if name == "logits" else result.probabilities
        strings = _classification(values, classes, k)
        return tensors.output(name, "BYTES", [n, min(k, len(classes))], strings, binary)
    if name == "logits":
        return tensors.output(name, "FP32", list(result.logits.shape), result.logits, binary)
    if name == "probabilities":
        probs = result.probabilities.astype(np.float32)
        return tensors.output(name, "FP32", list(probs.shape), probs, binary)
    return tensors.output(name, "BYTES", [n], [classes[i] for i in result.indices], binary)


def infer(serving: Serving, request: Request) -> Response:
    """POST /v2/models/{model}[/versions/{version}]/infer (JSON, or JSON + binary tensors)."""
    started = time.perf_counter()
    entry = serving.registry.version(request.params["model"], request.params.get("version"))
    header, binary = tensors.split_body(request.body(), request.header(tensors.HEADER_LENGTH))
    document = tensors.parse_header(header)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    given = tensors.parse_inputs(document.get("inputs"), binary)
    outputs = _requested(document, entry)
    inputs = _model_input(entry, given)
    result = serving.dataplane.infer(InferRequest(inputs, started=started, entry=entry))
    head: dict[str, Any] = {"model_name": entry.name, "model_version": str(entry.version)}
    if request_id is not None:
        head["id"] = request_id
    encoded = [_encode(result, *spec) for spec in outputs]
    head["outputs"] = [meta for meta, _ in encoded]
    json_part = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not any(binary for _, binary, _ in outputs):
        return Response(json_part, model=entry.ref, instances=result.instances)
    body = json_part + b"".join(part for _, part in encoded)
    return Response(
        body,
        content_type="application/octet-stream",
        headers=((tensors.HEADER_LENGTH, str(len(json_part))),),
        model=entry.ref,
        instances=result.instances,
    )


# --- the route table -------------------------------------------------------------------------

_TAG = "Open Inference Protocol (V2)"
_INFER_BODY = json_body(
    "V2InferenceRequest",
    "An inference request: JSON, or (binary tensor "
    "data extension) the JSON header followed by the tensors' bytes, its "
    "length in Inference-Header-Content-Length.",
)
_INFER_BODY["content"]["application/octet-stream"] = {
    "schema": {"type": "string", "format": "binary"}
}
_M = "/v2/models/{model}"


def _doc(summary: str, *errors: tuple[str, str], body: dict | None = None) -> dict[str, Any]:
    return operation(_TAG, summary, *errors, body=body)


ROUTES = [
    Route("GET", "/v2", server_metadata, PROTOCOL, _doc("Server metadata: extensions")),
    Route("GET", "/v2/health/live", live, PROTOCOL, _doc("Server liveness"), None),
    Route(
        "GET",
        "/v2/health/ready",
        ready,
        PROTOCOL,
        _doc("Server readiness", ("400", "Not ready")),
        None,
    ),
    *versioned("GET", _M, "", model_metadata, PROTOCOL, _doc("Model metadata", UNKNOWN)),
    *versioned(
        "GET",
        _M,
        "/config",
        model_config,
        PROTOCOL,
        _doc("Model configuration (Triton's)", UNKNOWN),
    ),
    *versioned(
        "GET",
        _M,
        "/ready",
        model_ready,
        PROTOCOL,
        _doc("Model readiness", ("400", "Not ready"), UNKNOWN),
    ),
    *versioned(
        "POST",
        _M,
        "/infer",
        infer,
        PROTOCOL,
        _doc(
            "Infer: logits, probabilities and labels",
            MALFORMED,
            UNKNOWN,
            ("413", "Body or images too large"),
            body=_INFER_BODY,
        ),
        "predict",
    ),
    Route(
        "POST",
        "/v2/repository/index",
        repository_index,
        PROTOCOL,
        _doc("Every model version and its state", MALFORMED),
        "admin",
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/load",
        model_control,
        PROTOCOL,
        _doc("Model load, in every worker (model control)", ("400", "Load failed"), UNKNOWN),
        "admin",
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/unload",
        model_control,
        PROTOCOL,
        _doc(
            "Model unload, in every worker (model control)",
            MALFORMED,
            UNKNOWN,
            ("409", "The default model cannot be unloaded"),
        ),
        "admin",
    ),
    Route(
        "GET",
        "/v2/models/stats",
        stats,
        PROTOCOL,
        _doc("Statistics of every model version, summed over workers"),
    ),
    *versioned(
        "GET",
        _M,
        "/stats",
        stats,
        PROTOCOL,
        _doc("Statistics of a model's versions, summed over workers", UNKNOWN),
    ),
]
SCHEMAS = {
    "V2InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "parameters": {"type": "object"},
                        "data": {},
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": list(OUTPUTS)},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    },
}
