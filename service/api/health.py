"""GET /health/live (the process answers) and /health/ready (models servable)."""

from __future__ import annotations

from flask import current_app
from flask_smorest import Blueprint

from service.schemas import HealthSchema

blp = Blueprint("health", __name__, description="Liveness and readiness probes")


@blp.route("/health/live", methods=["GET"])
@blp.response(200, HealthSchema)
def live():
    """200 while the process can answer."""
    return {"status": "alive"}


@blp.route("/health/ready", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema)
def ready():
    """200 when the models are loaded and servable; 503 with the reason otherwise."""
    registry = current_app.extensions["serving"].registry
    is_ready, reason = registry.readiness()
    body = {
        "status": "ready" if is_ready else "not_ready",
        "reason": reason,
        "models": {
            f"{e.name}/{e.version}": e.status
            for e in sorted(registry.entries.values(), key=lambda e: (e.name, e.version))
        },
    }
    return body, (200 if is_ready else 503)
