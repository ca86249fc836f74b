"""What every handler is given: the worker's settings, models, dataplane and key check."""

from __future__ import annotations

from dataclasses import dataclass

from service.inference.dataplane import DataPlane
from service.keys import Authenticator
from service.models.lifecycle import Lifecycle
from service.models.registry import Registry
from service.settings import Settings


@dataclass(frozen=True)
class Serving:
    """One worker's serving state (``app.extensions["serving"]``); ``openapi`` is the
    OpenAPI document generated from the route table, as JSON bytes."""

    settings: Settings
    registry: Registry
    dataplane: DataPlane
    lifecycle: Lifecycle
    auth: Authenticator
    openapi: bytes = b"{}"
