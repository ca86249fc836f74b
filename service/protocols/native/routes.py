"""The native route table and its OpenAPI operations."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from service.http.routing import Route, versioned
from service.protocols.native.codec import IMAGE_TYPES, PROTOCOL, predict
from service.protocols.native.health import live, ready
from service.protocols.native.models import (
    control,
    get_model,
    get_report_file,
    get_version,
    list_models,
    promote,
)
from service.protocols.schemas import (
    ApiErrorSchema,
    HealthSchema,
    ModelSchema,
    ModelsSchema,
    ModelVersionSchema,
    PredictFormSchema,
    PredictJSONSchema,
    PredictOptionsSchema,
    PredictResponseSchema,
)

_ERRORS = {
    str(s): {"description": d, "content": {"application/json": {"schema": ApiErrorSchema}}}
    for s, d in (
        (400, "Malformed request"),
        (404, "Unknown model or version"),
        (409, "The default model cannot be unloaded; nothing to promote"),
        (413, "Body or image too large"),
        (415, "Unsupported Content-Type"),
        (422, "Invalid content"),
        (503, "Model unavailable"),
    )
}
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
    return {
        "tags": _TAG,
        "summary": summary,
        "responses": {"200": _ok(schema), **{s: _ERRORS[s] for s in errors}},
    }


ROUTES = [
    Route(
        "POST",
        "/predict",
        predict,
        PROTOCOL,
        _predict_doc("Predict with the model named in the body or query (or the default)"),
        "predict",
    ),
    *versioned(
        "POST",
        "/models/{model}",
        "/predict",
        predict,
        PROTOCOL,
        _predict_doc(
            "Predict with a model (the version its weights pick, else its "
            "latest; or the version or label named)"
        ),
        "predict",
    ),
    Route(
        "GET",
        "/models",
        list_models,
        PROTOCOL,
        _get_doc(
            "Every model and version: status, provider, classes, input, test metrics", ModelsSchema
        ),
    ),
    Route(
        "GET",
        "/models/{model}",
        get_model,
        PROTOCOL,
        _get_doc("One model and its versions", ModelSchema, ("404",)),
    ),
    Route(
        "GET",
        "/models/{model}/versions/{version}",
        get_version,
        PROTOCOL,
        _get_doc(
            "One version (a number or a label), with its whole metadata.json",
            ModelVersionSchema,
            ("404",),
        ),
    ),
    Route(
        "GET",
        "/models/{model}/versions/{version}/report/{filename}",
        get_report_file,
        PROTOCOL,
        {
            "tags": _TAG,
            "summary": "A file of the version's training report (plots, "
            "README), as listed in the version's 'report'",
            "responses": {
                "200": {
                    "description": "The file",
                    "content": {
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                        "text/markdown": {"schema": {"type": "string"}},
                    },
                },
                "404": _ERRORS["404"],
            },
        },
    ),
    *(
        Route(
            "POST",
            f"/models/{{model}}/{action}",
            control,
            PROTOCOL,
            {**_get_doc(summary, ModelSchema, errors), "tags": ["model control"]},
            "admin",
        )
        for action, summary, errors in (
            (
                "load",
                "Serve a model (again), re-reading its folder, in every worker",
                ("404", "422"),
            ),
            ("unload", "Stop serving every version of a model, in every worker", ("404", "409")),
        )
    ),
    Route(
        "POST",
        "/models/{model}/versions/{version}/promote",
        promote,
        PROTOCOL,
        {
            **_get_doc(
                "Under new_versions hold: the version answers the requests that name no "
                "version, in every worker of this instance",
                ModelSchema,
                ("404", "409", "503"),
            ),
            "tags": ["model control"],
        },
        "admin",
    ),
    Route(
        "GET",
        "/health/live",
        live,
        PROTOCOL,
        _get_doc("200 while the process can answer", HealthSchema),
        None,
    ),
    Route(
        "GET",
        "/health/ready",
        ready,
        PROTOCOL,
        {
            **_get_doc(
                "200 when the models are servable; 503 with the reason otherwise", HealthSchema
            ),
            "responses": {"200": _ok(HealthSchema), "503": _ok(HealthSchema, "Not ready")},
        },
        None,
    ),
]
