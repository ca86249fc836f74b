"""What this worker serves: every model version it knows, and how a request finds one.

The registry is read by every request and written by one thread at a time
(:mod:`service.models.lifecycle`), which builds a new set of :class:`ModelView` objects and swaps
it in whole: a request sees the old set or the new one, never a mix, and takes no lock.
A version taken out of the set is not closed: requests already holding it finish with
it, and its onnxruntime session is freed when the last of them lets go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import metrics
from service.contract.metadata import version_number
from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import Spec
from service.errors import ModelNotFound, ModelUnavailable, ValidationFailed, VersionNotFound
from service.models.batching import DynamicBatcher
from service.models.predictor import OnnxPredictor
from service.models.serving_config import ServingConfig, WeightedChoice
from service.settings import Settings


@dataclass
class ModelEntry:
    """One model version: loaded (servable), failed (``error`` says why) or unloaded
    (present in the repository but not served; ``error`` says why)."""

    name: str
    version: int
    path: Path
    status: str = "pending"  # pending -> loaded | failed | unloaded
    error: str | None = None
    metadata: dict[str, Any] | None = None
    predictor: OnnxPredictor | None = None
    spec: Spec | None = None
    output: OutputSpec = field(default_factory=OutputSpec)
    load_seconds: float = 0.0
    batcher: DynamicBatcher | None = None
    fingerprint: tuple | None = None  # the files' (size, mtime, inode) when read
    digest: str | None = None  # sha256 over the files when loaded
    notice: str | None = None  # the files changed and the new ones failed to load

    @property
    def ref(self) -> tuple[str, int]:
        """(name, version)."""
        return self.name, self.version

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


@dataclass(frozen=True)
class ModelView:
    """One model as served now: its versions (ascending), its serving.json rules, and what
    is wrong with it, if anything."""

    name: str
    entries: dict[int, ModelEntry]
    config: ServingConfig = field(default_factory=ServingConfig)
    config_fingerprint: tuple | None = None
    problems: tuple[str, ...] = ()  # a bad serving.json, a label on a version not served
    chooser: WeightedChoice | None = None  # weights over the versions being served
    promoted: frozenset[int] | None = None  # new_versions hold: the only versions in service
    roles: dict[int, str] = field(default_factory=dict)  # serving | candidate | shadow
    shadow: ModelEntry | None = None  # the shadow version, where it can be compared
    shadow_fraction: float = 0.0
    shadow_for: frozenset[int] = frozenset()  # the versions whose answers it is compared to

    @property
    def served(self) -> list[ModelEntry]:
        """Loaded versions, ascending."""
        return [e for e in self.entries.values() if e.loaded]

    @property
    def in_service(self) -> list[ModelEntry]:
        """Loaded versions that may answer requests that name no version (under ``hold``,
        only promoted ones), ascending."""
        promoted = self.promoted
        return [
            e
            for e in self.entries.values()
            if e.loaded and (promoted is None or e.version in promoted)
        ]

    def role(self, version: int) -> str:
        """serving, candidate or shadow for a version the rules serve; retired otherwise."""
        return self.roles.get(version, "retired")

    def version(self, version: int | str | None = None, *, servable: bool = False) -> ModelEntry:
        """The version a request means: with no version, one picked by the weights, else the
        latest loaded; a version is a number, the digits of one, or a serving.json label.
        404 for none such; with ``servable``, 503 for one that failed to load and 404 for one
        not served (policy, or unloaded through the API)."""
        entry = self._find(version)
        if servable and entry.status == "failed":
            raise ModelUnavailable(
                f"model {self.name!r} version {entry.version} failed to load",
                details={"error": entry.error},
            )
        if servable and not entry.loaded:
            raise VersionNotFound(
                f"model {self.name!r} version {entry.version} is not served: {entry.error}",
                details={"available": [e.version for e in self.served]},
            )
        return entry

    def _find(self, version: int | str | None) -> ModelEntry:
        name = self.name
        if version is None:
            if self.chooser is not None:
                return self.entries[self.chooser.pick()]
            served = self.in_service
            if served:
                return served[-1]
            if not self.entries:
                raise VersionNotFound(f"model {name!r} has no versions")
            held = [e.version for e in self.served]
            if held:  # never an unreviewed version for a request that names none
                raise ModelUnavailable(
                    f"model {name!r}: no promoted version is loaded; version(s) {held} are "
                    "held (new_versions hold): name one, or promote it",
                    details={"available": held},
                )
            return next(reversed(self.entries.values()))
        number = version if type(version) is int else None
        if isinstance(version, str):
            number = version_number(version)
            if number is None and version in self.config.labels:
                number = self.config.labels[version]
        entry = self.entries.get(number) if number is not None else None
        if entry is None:
            label_like = isinstance(version, str) and not version.isdigit()
            raise VersionNotFound(
                f"model {name!r} has no version or label {version!r}"
                if label_like
                else f"model {name!r} has no version {version}",
                details={"available": list(self.entries), "labels": dict(self.config.labels)},
            )
        return entry

    def labels_of(self, version: int) -> list[str]:
        """The labels that name a version."""
        return sorted(label for label, v in self.config.labels.items() if v == version)


class Registry:
    """The current model views; lookups by name and version, number or label."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ModelView] = {}
        self.loaded_once = False
        self.repository_error: str | None = None

    @property
    def entries(self) -> list[ModelEntry]:
        """Every known version of every model, in (name, version) order."""
        models = self.models  # one snapshot: a swap in between changes nothing here
        return [e for name in sorted(models) for e in models[name].entries.values()]

    def close(self) -> None:
        """Drain the batching queues (gunicorn's worker_exit)."""
        for view in self.models.values():
            for entry in view.entries.values():
                if entry.batcher is not None:
                    entry.batcher.close()

    def names(self) -> list[str]:
        """Model names, sorted."""
        return sorted(self.models)

    def model(self, name: str) -> ModelView:
        """A model as served now (404 for a name the repository does not have)."""
        view = self.models.get(name)
        if view is None:
            raise ModelNotFound(f"model {name!r} not found", details={"available": self.names()})
        return view

    def default_model(self) -> tuple[str | None, str]:
        """(the model a request that names none means, why): the configured one
        (``SERVING_DEFAULT_MODEL``) where the repository has it, else the only model, else
        none."""
        models, configured = self.models, self.settings.default_model
        if configured and configured in models:
            return configured, "SERVING_DEFAULT_MODEL"
        if len(models) == 1:
            missing = f"; {configured!r} is not in the repository" if configured else ""
            return next(iter(models)), f"the repository's only model{missing}"
        if configured:
            return None, f"SERVING_DEFAULT_MODEL {configured!r} is not in the repository"
        return None, "SERVING_DEFAULT_MODEL is not set and the repository has several models"

    def version(
        self, name: str | None, version: int | str | None = None, *, servable: bool = True
    ) -> ModelEntry:
        """The version a request means (:meth:`ModelView.version`) of a model, the default
        model when ``name`` is None."""
        if not name:
            name, why = self.default_model()
            if name is None:
                raise ValidationFailed(
                    f"name a model: there is no default model ({why})",
                    details={"available": self.names()},
                )
        return self.model(name).version(version, servable=servable)

    def keeps_series(self) -> Callable[[dict[str, str]], bool]:
        """Which metric series /metrics shows: those of no model, or of a model in the
        repository and versions its rules serve (loaded or failing to); a role or an alert
        threshold only as the rules say now."""
        models = self.models  # one snapshot

        def keep(labels: dict[str, str]) -> bool:
            name = labels.get("model")
            if name is None:
                return True
            view = models.get(name)
            if view is None:
                return False
            for key in ("version", "shadow_version"):
                number = labels.get(key)
                if number is not None and version_number(number) not in view.roles:
                    return False
            if "role" in labels:
                return view.roles[int(labels["version"])] == labels["role"]
            return "alert" not in labels or labels["alert"] in view.config.alerts

        return keep

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): loading done, at least one model servable, default model servable."""
        if not self.loaded_once:
            return False, "models are still loading"
        if self.repository_error and not self.models:
            return False, self.repository_error
        entries = self.entries
        if not any(e.loaded for e in entries):
            return False, "no model loaded"
        default, why = self.default_model()
        if default:
            try:
                self.version(default)
            except (ModelNotFound, ModelUnavailable, VersionNotFound) as exc:
                return False, f"default model: {exc.message}"
        failed = [f"{e.name} v{e.version}" for e in entries if e.status == "failed"]
        trouble = [f"failed to load: {', '.join(failed)}"] if failed else []
        trouble += [f"{e.name} v{e.version}: {e.notice}" for e in entries if e.notice]
        trouble += [f"{v.name}: {p}" for v in self.models.values() for p in v.problems]
        if self.settings.default_model and default != self.settings.default_model:
            trouble.append(f"default model: {why}")
        if self.repository_error:
            trouble.insert(0, self.repository_error)
        if trouble:
            return True, "serving; " + "; ".join(trouble)
        return True, "all models loaded"
