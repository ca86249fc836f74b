"""Marshmallow schemas: request options, JSON bodies and responses (and so the OpenAPI doc)."""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.contract.metadata import version_number
from service.models.serving_config import LABEL

INPUT_KEYS = ("instances", "instance", "images", "image")
# What a field's OpenAPI property is, where marshmallow's type cannot say it
# (service.protocols.openapi merges metadata["openapi"] into the property).
_NOT_NULL = {
    "anyOf": [
        {"type": "array", "items": {}},
        {"type": "string"},
        {"type": "number"},
        {"type": "object"},
        {"type": "boolean"},
    ]
}
_VERSION_TEXT = r"^([1-9][0-9]{0,17}|[A-Za-z][A-Za-z0-9_.-]{0,63})$"  # digits or a label
_VERSION = {
    "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": _VERSION_TEXT}]
}


def is_version(text: str) -> bool:
    """A version number's digits, or a label."""
    return version_number(text) is not None or LABEL.fullmatch(text) is not None


class VersionField(fields.Field):
    """A version: a number (or its digits), or a label from the model's serving.json."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is int and value >= 1:
            return value
        if isinstance(value, str) and is_version(value):
            return version_number(value) or value
        raise ValidationError("a version number (1 or more) or a label")


class PredictOptionsSchema(Schema):
    """Model selection and output options: query string, form fields or JSON keys."""

    model = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Model name; the configured default model when omitted."},
    )
    version = VersionField(
        metadata={
            "description": "Model version (a number) or label (from the model's "
            "serving.json); when omitted, the version the model's weights pick, else "
            "its latest loaded version.",
            "openapi": _VERSION,
        },
    )
    top_k = fields.Integer(
        strict=False,
        validate=validate.Range(min=1),
        metadata={"description": "Return only the k most probable classes."},
    )
    logits = fields.Boolean(
        load_default=False, metadata={"description": "Also return the raw logits."}
    )
    show_input = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also return each instance as the model sees it: an image "
            "model's input tensor as a PNG data URL, a feature model's standardised "
            "vector."
        },
    )


class PredictFormSchema(PredictOptionsSchema):
    """A multipart body: the options as form fields, and image files under any field names."""

    file = fields.List(
        fields.Raw(metadata={"type": "string", "format": "binary"}),
        metadata={"description": "One or more image files (PNG, JPEG, ...)."},
    )


class PredictJSONSchema(PredictOptionsSchema):
    """A JSON prediction body: exactly one of instances, instance, images, image."""

    # What the schema's fields cannot say: exactly one input (merged by service.protocols.openapi).
    openapi_extra: ClassVar[dict[str, Any]] = {"oneOf": [{"required": [k]} for k in INPUT_KEYS]}

    instances = fields.List(
        fields.Raw(metadata={"openapi": _NOT_NULL}),
        metadata={
            "description": "A batch: feature vectors, pixel arrays in the model's raw units, "
            'base64 images, or {"b64": ...} objects. A flat list of numbers is one vector.'
        },
    )
    instance = fields.Raw(
        metadata={"description": "One feature vector, pixel array or image.", "openapi": _NOT_NULL}
    )
    images = fields.List(fields.String(), metadata={"description": "Base64-encoded images."})
    image = fields.String(metadata={"description": "One base64-encoded image."})

    @validates_schema
    def _exactly_one_input(self, data, **kwargs):
        given = [k for k in INPUT_KEYS if k in data]
        if len(given) != 1:
            raise ValidationError(
                f"give exactly one of {', '.join(INPUT_KEYS)}; got "
                + (", ".join(given) if given else "none"),
                field_name="_schema",
            )


def plain_options(data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``PredictJSONSchema().load(data)`` returns, when data is in the common shape.

    The shape almost every request has (one input, perhaps a model name, native JSON
    types) is checked directly: marshmallow costs as much as the rest of the request
    handling on a small model. Anything else returns None, for the schema to load and to
    word its errors.
    """
    given = 0
    for key, value in data.items():
        kind = type(value)
        if key == "instances":
            ok = kind is list and None not in value  # marshmallow: "may not be null"
        elif key == "instance":
            ok = value is not None
        elif key == "images":
            ok = kind is list and all(type(v) is str for v in value)
        elif key == "image":
            ok = kind is str
        elif key == "model":
            ok = kind is str and 1 <= len(value) <= 64
        elif key == "version":
            ok = (kind is int and value >= 1) or (kind is str and is_version(value))
        elif key == "top_k":
            ok = kind is int and value >= 1
        elif key in ("logits", "show_input"):
            ok = kind is bool
        else:
            return None
        if not ok:
            return None
        given += key in INPUT_KEYS
    if given != 1:
        return None
    options = {"logits": False, "show_input": False, **data}
    if type(options.get("version")) is str:  # digits become the number, as in the schema
        options["version"] = version_number(options["version"]) or options["version"]
    return options


class ModelRefSchema(Schema):
    """Which model answered."""

    name = fields.String(required=True)
    version = fields.Integer(required=True)
    task = fields.String(required=True)
    provider = fields.String(required=True, metadata={"description": "onnxruntime provider"})


class PredictionSchema(Schema):
    """One instance's result."""

    label = fields.String(required=True)
    index = fields.Integer(required=True)
    confidence = fields.Float(required=True)
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    logits = fields.List(fields.Float())
    input = fields.Raw(
        metadata={
            "description": "with show_input: the instance as the model "
            "sees it (PNG data URL, or the standardised features)"
        }
    )


class PredictResponseSchema(Schema):
    """The /predict response."""

    request_id = fields.String(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    predictions = fields.List(fields.Nested(PredictionSchema), required=True)


class ErrorBodySchema(Schema):
    """What went wrong."""

    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw()


class ApiErrorSchema(Schema):
    """Every error response of the native API."""

    error = fields.Nested(ErrorBodySchema, required=True)
    request_id = fields.String(required=True)


class ModelVersionSchema(Schema):
    """A model version: status, provider and (when readable) its metadata."""

    name = fields.String(required=True)
    version = fields.Integer(required=True)
    status = fields.String(
        required=True,
        metadata={
            "description": "loaded, failed (error says why) or unloaded (present in the "
            "repository but not served: error says why)"
        },
    )
    error = fields.String(allow_none=True)
    notice = fields.String(
        metadata={
            "description": "the files changed and the new ones failed to load; the previous "
            "ones are still served"
        }
    )
    provider = fields.String(allow_none=True)
    load_seconds = fields.Float()
    role = fields.String(
        metadata={
            "description": "serving (answers requests; those that name no version go to the "
            "latest serving one or by weights), candidate (held by new_versions hold: only "
            "requests that name it), shadow (also runs a share of the serving versions' "
            "inputs, for comparison) or retired (not served)"
        }
    )
    labels = fields.List(fields.String(), metadata={"description": "labels naming it"})
    weight = fields.Float(
        allow_none=True,
        metadata={"description": "its share of the requests that name no version (serving.json)"},
    )
    task = fields.String()
    classes = fields.List(fields.String())
    input = fields.Dict()
    output = fields.Dict()
    report = fields.List(
        fields.String(),
        metadata={
            "description": "the training report's files (one version's view only), at "
            "/models/{model}/versions/{version}/report/{file}"
        },
    )
    preprocessing = fields.Dict()
    metrics = fields.Dict(
        allow_none=True,
        metadata={
            "description": "test metrics (without the per-class table) and calibration; "
            "null when unknown (an imported model without labelled data)"
        },
    )
    metadata = fields.Dict()


class ServingRulesSchema(Schema):
    """A model's serving.json, resolved: what it serves and how unversioned requests are
    routed."""

    version_policy = fields.String(metadata={"description": "all, latest N or specific [..]"})
    labels = fields.Dict(keys=fields.String(), values=fields.Integer())
    weights = fields.Dict(keys=fields.String(), values=fields.Float())
    new_versions = fields.String(metadata={"description": "serve or hold"})
    shadow = fields.Dict(
        allow_none=True, metadata={"description": "{version, fraction}: the shadow version"}
    )
    alerts = fields.Dict(
        keys=fields.String(),
        values=fields.Float(),
        metadata={"description": "per-model alert thresholds (model_alert_threshold)"},
    )
    problems = fields.List(
        fields.String(),
        metadata={
            "description": "a serving.json that could not be used, a label on a version not served"
        },
    )


class FlipSchema(Schema):
    """Compared instances whose top-1 class differs, by class pair."""

    served = fields.String()
    shadow = fields.String()
    count = fields.Integer()


class ComparisonSchema(Schema):
    """A serving version's answers against the shadow's, summed over the workers."""

    version = fields.Integer(metadata={"description": "the serving version"})
    shadow_version = fields.Integer()
    comparisons = fields.Integer(metadata={"description": "instances compared"})
    agreements = fields.Integer(metadata={"description": "... with the same top-1 class"})
    agreement_rate = fields.Float(allow_none=True)
    mean_abs_delta = fields.Float(
        allow_none=True, metadata={"description": "mean |p_served - p_shadow| of the served class"}
    )
    mean_kl = fields.Float(allow_none=True, metadata={"description": "mean KL(served || shadow)"})
    dropped = fields.Integer(metadata={"description": "not compared: the shadow queue was full"})
    failed = fields.Integer(metadata={"description": "not compared: the shadow run failed"})
    flips = fields.List(
        fields.Nested(FlipSchema), metadata={"description": "the 20 most frequent label pairs"}
    )
    other_flips = fields.Integer(metadata={"description": "flips outside those pairs"})


class ShadowSchema(Schema):
    """The shadow version and what its comparisons found."""

    version = fields.Integer(allow_none=True)
    fraction = fields.Float(allow_none=True)
    compared_with = fields.List(fields.Integer())
    comparisons = fields.List(fields.Nested(ComparisonSchema))


class ModelSchema(Schema):
    """A model and all its versions."""

    name = fields.String(required=True)
    latest_version = fields.Integer(
        allow_none=True,
        metadata={"description": "the version requests that name none get (without weights)"},
    )
    default = fields.Boolean()
    serving = fields.Nested(ServingRulesSchema)
    versions = fields.List(fields.Nested(ModelVersionSchema))
    shadow = fields.Nested(ShadowSchema)


class ModelsSchema(Schema):
    """GET /models."""

    default_model = fields.String(allow_none=True)
    models = fields.List(fields.Nested(ModelSchema))


class HealthSchema(Schema):
    """Liveness and readiness."""

    status = fields.String(required=True)
    reason = fields.String()
    models = fields.Dict()
