"""All service settings in one frozen object, read from ``SERVING_*`` environment variables.

Nothing else in the service reads ``os.environ``. Tests pass overrides to ``create_app``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

PREFIX = "SERVING_"
MODEL_CONTROL_MODES = ("poll", "explicit")
REPO_ROOT = Path(__file__).resolve().parent.parent
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s?#]+/?")  # a browser's Origin


class SettingsError(ValueError):
    """An environment variable holds a value of the wrong kind."""


def _tuple(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


@dataclass(frozen=True)
class Settings:
    """Typed service configuration; each field is ``SERVING_<FIELD NAME IN CAPITALS>``."""

    model_repository: Path = REPO_ROOT / "models"
    default_model: str = "fashion-mnist"
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    verify_checksums: bool = True
    max_instances: int = 4096
    max_elements: int = 8_388_608
    limit_overrides: str = ""
    batching: bool = False  # on a CPU it cannot gain 10%: docs/performance.md
    batch_max_size: int = 32
    batch_max_delay_us: int = 0
    batch_timeout_s: float = 10.0
    batching_overrides: str = ""
    shadow_queue: int = 64  # requests waiting for their shadow run (per worker); then dropped
    shadow_queue_mb: int = 64  # ... and megabytes of their input tensors
    max_body_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_request_pixels: int = 32_000_000
    max_images: int = 256  # each costs ~1-2 ms to decode however few its pixels
    decode_timeout_s: float = 10.0  # a request's images, well inside the worker's timeout
    bind: str = "127.0.0.1:8000"
    workers: int = 2
    threads: int = 1  # one: the main loop answers each request (service/http/worker.py)
    timeout: int = 30
    graceful_timeout: int = 20
    keepalive: int = 5
    read_timeout_s: float = 15.0  # a request must arrive whole within this (else 408)
    write_timeout_s: float = 15.0  # an answer must be read within this (else closed)
    log_level: str = "INFO"
    metrics_dir: str = ""  # empty: a new folder for each instance, removed when it stops
    poll_interval_s: float = 1.0  # repository checks; 0: never (changes need a restart)
    model_control: str = "poll"  # or "explicit": only the model-control API loads/unloads
    api_keys_file: str = ""  # empty: no API keys (anyone who reaches the port may call)
    metrics_auth: bool = False  # /metrics needs a key with the "read" scope
    cors_origins: tuple[str, ...] = ()  # browser origins the route table answers; "*": any

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``SERVING_*`` variables, then keyword overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            if key not in environ:
                continue
            values[f.name] = _parse(f.name, environ[key], f.type)
        return replace(cls(), **{**values, **overrides})

    def describe(self) -> dict[str, str]:
        """Each setting as its environment variable and current value (for docs and logs)."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def _parse(name: str, raw: str, kind: str) -> Any:
    parsers = {
        "Path": Path,
        "str": str,
        "int": int,
        "float": float,
        "bool": _bool,
        "tuple[str, ...]": _tuple,
    }
    try:
        value = parsers[kind](raw)
    except (KeyError, ValueError) as exc:
        raise SettingsError(f"{PREFIX}{name.upper()}={raw!r}: {exc}") from None
    if kind == "float" and not math.isfinite(value):
        raise SettingsError(f"{PREFIX}{name.upper()} must be a finite number, got {raw!r}")
    may_be_zero = name in ("keepalive", "batch_max_delay_us", "poll_interval_s")
    if kind in ("int", "float") and (value < 0 or (value == 0 and not may_be_zero)):
        raise SettingsError(f"{PREFIX}{name.upper()} must be positive, got {value}")
    if name == "cors_origins":
        bad = [o for o in value if o != "*" and not _ORIGIN.fullmatch(o)]
        if bad:
            raise SettingsError(
                f"{PREFIX}CORS_ORIGINS: {bad[0]!r} is not an origin (scheme://host[:port]) or *"
            )
    if name == "model_control" and value not in MODEL_CONTROL_MODES:
        raise SettingsError(
            f"{PREFIX}MODEL_CONTROL must be one of {', '.join(MODEL_CONTROL_MODES)}, got {value!r}"
        )
    return value


def model_overrides(variable: str, text: str, allowed: Iterable[str]) -> dict[str, dict[str, Any]]:
    """A per-model JSON setting, ``{"model": {"option": value}}``; unknown options are errors."""
    if not text.strip():
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{variable} is not JSON: {exc}") from None
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise SettingsError(f'{variable} must look like {{"model": {{"option": value}}}}')
    allowed = set(allowed)
    for name, values in overrides.items():
        unknown = set(values) - allowed
        if unknown:
            raise SettingsError(
                f"{variable}: unknown option(s) for {name}: {sorted(unknown)}; "
                f"known: {sorted(allowed)}"
            )
    return overrides
