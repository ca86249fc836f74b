"""The OpenAPI 3 document, generated from the route table (marshmallow schemas via apispec)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from service.http.routing import Route
from service.protocols.schemas import PredictJSONSchema

TITLE = "Keras classifier serving"
VERSION = "1.0.0"
DESCRIPTION = (
    "Classifiers trained in Keras, exported to ONNX and served with onnxruntime. "
    "Probabilities are the softmax (or sigmoid) of the model's logits. Three protocols on "
    "one port: the native API, the Open Inference Protocol (KServe V2, /v2) and "
    "TensorFlow Serving's REST API (/v1)."
)
_MESSAGE_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def _declared(self, field, **kwargs) -> dict[str, Any]:
    """A field's own OpenAPI property (``metadata["openapi"]``), where its type says too
    little (a version: a number or a label; an instance: anything but null)."""
    return dict(field.metadata.get("openapi", {}))


def document(routes: Iterable[Route], schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Every documented route as an OpenAPI operation, with its path parameters."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": DESCRIPTION},
    )
    plugin.converter.add_attribute_function(_declared)
    spec.components.schema("MessageError", _MESSAGE_ERROR)
    for name, schema in schemas.items():
        spec.components.schema(name, schema)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.doc is None:
            continue
        operation = dict(route.doc)
        operation["parameters"] = [
            {"in": "path", "name": p, "required": True, "schema": {"type": "string"}}
            for p in route.params
        ] + list(operation.get("parameters", []))
        # Unique because method and template are: "post_v2_models_model_infer".
        slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method} {route.template}").strip("_")
        operation["operationId"] = slug.lower()
        paths.setdefault(route.template, {})[route.method.lower()] = operation
    for template, operations in paths.items():
        spec.path(path=template, operations=operations)
    result = spec.to_dict()
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        schema.update(_EXTRAS.get(name, {}))
    return result


_EXTRAS = {"PredictJSON": PredictJSONSchema.openapi_extra}
