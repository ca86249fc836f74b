"""The native health routes: liveness, and readiness with its reason."""

from __future__ import annotations

from typing import Any

from service import metrics
from service.http.messages import Request, Response, json_response
from service.keys import DETAILS_NEED_READ
from service.protocols.serving import Serving


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
    body: dict[str, Any] = {
        "status": "ready" if is_ready else "not_ready",
        "reason": reason,
        "models": {f"{e.name}/{e.version}": e.status for e in registry.entries},
    }
    if not serving.auth.permits(request.environ, "read"):
        body = {"status": body["status"], "reason": DETAILS_NEED_READ}
    return json_response(body, 200 if is_ready else 503)
