"""GET /models, /models/<name>, /models/<name>/versions/<v>: metadata and load status."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint

from service.registry import ModelEntry
from service.schemas import ApiErrorSchema, ModelSchema, ModelsSchema, ModelVersionSchema

blp = Blueprint("models", __name__, description="The model repository: metadata and status")


def version_view(entry: ModelEntry, full: bool = False) -> dict[str, Any]:
    """Status, provider and the metadata a client needs (all of it when ``full``)."""
    view: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "status": entry.status,
        "error": entry.error,
        "provider": entry.provider,
        "load_seconds": round(entry.load_seconds, 4),
    }
    meta = entry.metadata
    if meta:
        view.update(
            task=meta["task"],
            classes=meta["classes"],
            input=meta["input"],
            output=meta["output"],
            preprocessing=meta["preprocessing"],
            metrics={k: v for k, v in meta["metrics"]["test"].items() if k != "per_class"},
        )
        if full:
            view["metadata"] = meta
    return view


def model_view(name: str, full: bool = False) -> dict[str, Any]:
    """A model with every version."""
    registry = current_app.extensions["serving"].registry
    versions = registry.versions_of(name)
    loaded = [e.version for e in versions if e.loaded]
    return {
        "name": name,
        "latest_version": loaded[-1] if loaded else None,
        "default": name == registry.settings.default_model,
        "versions": [version_view(e, full) for e in versions],
    }


@blp.route("/models", methods=["GET"])
@blp.response(200, ModelsSchema)
def list_models():
    """Every model and version, with status, provider, classes, input and test metrics."""
    registry = current_app.extensions["serving"].registry
    return {
        "default_model": registry.settings.default_model or None,
        "models": [model_view(name) for name in registry.names()],
    }


@blp.route("/models/<string:name>", methods=["GET"])
@blp.response(200, ModelSchema)
@blp.alt_response(404, schema=ApiErrorSchema)
def get_model(name: str):
    """One model and its versions."""
    current_app.extensions["serving"].registry.find(name)  # 404 when unknown
    return model_view(name)


@blp.route("/models/<string:name>/versions/<int:version>", methods=["GET"])
@blp.response(200, ModelVersionSchema)
@blp.alt_response(404, schema=ApiErrorSchema)
def get_version(name: str, version: int):
    """One version, with its full metadata.json."""
    entry = current_app.extensions["serving"].registry.find(name, version)
    return version_view(entry, full=True)
