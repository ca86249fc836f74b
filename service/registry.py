"""Every model version in the repository, loaded (or failed, with the reason)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from service import metadata as contract
from service import metrics
from service.batching import BatchingConfig, DynamicBatcher, config_for
from service.errors import ModelNotFound, ModelUnavailable, VersionNotFound
from service.postprocessing import OutputSpec
from service.predictor import OnnxPredictor
from service.preprocessing import Spec, spec_from_dict
from service.settings import Settings, model_overrides

log = logging.getLogger(__name__)


@dataclass
class ModelEntry:
    """One model version and its load status."""

    name: str
    version: int
    path: Path
    status: str = "pending"  # pending -> loaded | failed
    error: str | None = None
    metadata: dict[str, Any] | None = None
    predictor: OnnxPredictor | None = None
    spec: Spec | None = None
    output: OutputSpec = field(default_factory=OutputSpec)
    load_seconds: float = 0.0
    batcher: DynamicBatcher | None = None

    @property
    def loaded(self) -> bool:
        """Servable."""
        return self.status == "loaded"

    @property
    def meters(self) -> metrics.ModelMeters:
        """The loaded version's metrics (its predictor's)."""
        return self.predictor.meters

    @property
    def provider(self) -> str | None:
        """Execution provider actually in use, where loaded."""
        return self.predictor.provider if self.predictor and self.loaded else None


class Registry:
    """Loads a model repository; looks models up by name and optional version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.entries: dict[tuple[str, int], ModelEntry] = {}
        self.loaded_once = False
        self.repository_error: str | None = None
        # Narrowed after the first session: a provider that cannot start (CUDA libraries
        # missing) is not retried, and not logged again, for every other model.
        self.providers: list[str] = list(settings.providers)
        self.batching_overrides = model_overrides(
            "SERVING_BATCHING_OVERRIDES",
            settings.batching_overrides,
            (f.name for f in fields(BatchingConfig)),
        )
        self.batching = BatchingConfig(
            enabled=settings.batching,
            max_batch_size=settings.batch_max_size,
            max_delay_us=settings.batch_max_delay_us,
            timeout_s=settings.batch_timeout_s,
        )

    def load_all(self) -> None:
        """Load every ``<name>/<version>``; a failing one is recorded, the rest still load."""
        root = Path(self.settings.model_repository)
        if not root.is_dir():
            self.repository_error = f"model repository {root} does not exist"
            log.error(self.repository_error)
            self.loaded_once = True
            return
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for version in contract.versions(root, model_dir.name):
                entry = ModelEntry(model_dir.name, version, model_dir / str(version))
                self.entries[(entry.name, entry.version)] = entry
                self._load(entry)
        self.loaded_once = True

    def _load(self, entry: ModelEntry) -> None:
        started = time.perf_counter()
        try:
            meta = contract.read(entry.path, verify_checksum=self.settings.verify_checksums)
            batching = config_for(self.batching, self.batching_overrides, entry.name)
            predictor = OnnxPredictor(
                entry.path,
                meta,
                self.providers,
                self.settings.intra_op_threads,
                self.settings.inter_op_threads,
                max_rows=batching.max_batch_size,
            )
            predictor.load()
            self.providers = [p for p in self.providers if p in predictor.providers]
            entry.metadata, entry.predictor = meta, predictor
            entry.spec = spec_from_dict(meta["preprocessing"])
            entry.output = OutputSpec.from_dict(meta["output"])
            entry.status = "loaded"
            if batching.enabled:
                entry.batcher = DynamicBatcher(
                    entry.name, entry.version, predictor.predict, batching
                )
            log.info(
                "loaded model %s v%d on %s in %.3f s",
                entry.name,
                entry.version,
                predictor.provider,
                time.perf_counter() - started,
                extra={"model": entry.name, "version": entry.version},
            )
        except Exception as exc:  # any failure: report it, serve the other models
            entry.status, entry.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("model %s v%d failed to load: %s", entry.name, entry.version, entry.error)
        entry.load_seconds = time.perf_counter() - started
        metrics.record_model(
            entry.name, entry.version, entry.loaded, entry.load_seconds, entry.provider
        )

    def close(self) -> None:
        """Drain and stop every batching thread (gunicorn's worker_exit calls this)."""
        for entry in self.entries.values():
            if entry.batcher is not None:
                entry.batcher.close()

    def names(self) -> list[str]:
        """Model names, sorted."""
        return sorted({name for name, _ in self.entries})

    def versions_of(self, name: str) -> list[ModelEntry]:
        """All versions of a model, ascending."""
        return sorted((e for e in self.entries.values() if e.name == name), key=lambda e: e.version)

    def select(self, name: str | None = None, version: int | str | None = None) -> list[ModelEntry]:
        """Entries in (name, version) order: every one; a model's versions; or one version.
        An unknown model or version is a 404, as in ``find``."""
        if name is None:
            return sorted(self.entries.values(), key=lambda e: (e.name, e.version))
        if version is not None:
            return [self.find(name, version)]
        self.find(name)
        return self.versions_of(name)

    def find(self, name: str, version: int | str | None = None) -> ModelEntry:
        """The entry for a name and version (latest loaded version when none is given).

        A version may come as a number or as the digits of one (a URL segment, V2's
        ``model_version``); anything else names no version.
        """
        versions = self.versions_of(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} not found", details={"available": self.names()})
        if version is None:
            loaded = [e for e in versions if e.loaded]
            return loaded[-1] if loaded else versions[-1]
        number = version_number(version)
        for entry in versions:
            if entry.version == number:
                return entry
        raise VersionNotFound(
            f"model {name!r} has no version {version}",
            details={"available": [e.version for e in versions]},
        )

    def get(self, name: str, version: int | str | None = None) -> ModelEntry:
        """Like find, but the entry must be servable."""
        entry = self.find(name, version)
        if not entry.loaded:
            raise ModelUnavailable(
                f"model {name!r} version {entry.version} failed to load",
                details={"error": entry.error},
            )
        return entry

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): loading done, at least one model servable, default model servable."""
        if not self.loaded_once:
            return False, "models are still loading"
        if self.repository_error:
            return False, self.repository_error
        if not any(e.loaded for e in self.entries.values()):
            return False, "no model loaded"
        default = self.settings.default_model
        if default:
            try:
                self.get(default)
            except (ModelNotFound, ModelUnavailable) as exc:
                return False, f"default model: {exc.message}"
        failed = [f"{e.name} v{e.version}" for e in self.entries.values() if e.status == "failed"]
        if failed:
            return True, f"serving; failed to load: {', '.join(failed)}"
        return True, "all models loaded"


def version_number(version: int | str) -> int | None:
    """The integer a version names, or None (a version number is ASCII digits)."""
    if type(version) is int:
        return version
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) < 19:
        return int(version)
    return None
