"""Keeping a worker's registry in step with the repository and the model-control API.

One pass (:meth:`Lifecycle.refresh`): scan the repository (stat only), read the control
record, and for each model work out which versions to serve (serving.json's policy,
labels and weights; API loads and unloads). A new or changed version is loaded, checked
and warmed up *before* the new view is swapped in; a version that fails to load is
reported and whatever was serving keeps serving; a version no longer wanted leaves the
view, and its session is freed once the requests holding it finish.

Which versions a pass serves is decided by :mod:`service.models.policy` (pure functions);
loading one is :mod:`service.models.loader`'s.

Poll mode runs a pass every ``SERVING_POLL_INTERVAL_S``. Explicit mode reads the
repository when the instance starts and afterwards only on an API load. Either way every
worker follows the shared control record, so all workers serve the same versions within
one check of each other, and a restarted worker comes up in the current state.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Collection
from pathlib import Path

from service import metrics
from service.errors import Conflict, ModelNotFound
from service.models import policy, repository
from service.models.control import ControlStore, State
from service.models.loader import Loader, trim_heap
from service.models.policy import NOT_LOADED_EXPLICIT
from service.models.registry import ModelEntry, ModelView, Registry
from service.models.serving_config import ServingConfig, ServingConfigError, WeightedChoice
from service.settings import Settings

log = logging.getLogger(__name__)

CONTROL_CHECK_S = 1.0  # how often the control record is read when nothing else is polled


class Lifecycle:
    """Loads, swaps and retires model versions for one worker's registry."""

    def __init__(self, settings: Settings, registry: Registry, control: ControlStore) -> None:
        self.settings, self.registry, self.control = settings, registry, control
        self.explicit = settings.model_control == "explicit"
        self.loader = Loader(settings)
        self._lock = threading.Lock()  # one pass at a time (watcher thread, API requests)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._control_seen: dict = {}
        self._default_said: tuple[str | None, str] | None = None

    # --- start, watch, stop -------------------------------------------------------------------

    def start(self, watch: bool = True) -> None:
        """The first pass (in explicit mode the first worker records what it loads), then
        a watcher thread where there is something to watch."""
        if self.explicit:
            root = Path(self.settings.model_repository)

            def first_start(state: State) -> None:
                if not state.get("initialized"):
                    found = repository.scan(root) if root.is_dir() else {}
                    state["models"] = {
                        n: {"action": "load", "versions": list(f.versions)}
                        for n, f in found.items()
                    }
                    state["initialized"] = True

            self.control.update(first_start)
        self.refresh()
        trim_heap()  # reading and checking the files left freed heap behind
        interval = self.interval
        if watch and interval:
            # The thread holds the lifecycle weakly: an app that is dropped (tests build
            # many) takes its watcher with it.
            self._thread = threading.Thread(
                target=_watch,
                name="model-watcher",
                daemon=True,
                args=(weakref.ref(self), self._stop, interval),
            )
            self._thread.start()

    @property
    def interval(self) -> float:
        """Seconds between checks (0: no watcher): the poll interval, or the control
        record's check where the repository itself is not polled but workers must agree."""
        polled = 0.0 if self.explicit else self.settings.poll_interval_s
        if polled:
            return polled
        return CONTROL_CHECK_S if self.control.shared else 0.0

    def stop(self) -> None:
        """Stop the watcher thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def tick(self) -> None:
        """One check: the whole repository in poll mode, else the models whose control
        record changed. A changed record (an API load anywhere) also retries versions that
        failed here with the same files."""
        try:
            changed = self._control_changes()
            if not self.explicit and self.settings.poll_interval_s:
                self.refresh(retry=changed)
            elif changed:
                self.refresh(only=changed, retry=changed)
        except Exception:  # a bug must not stop the watching
            log.exception("model repository check failed")

    def _control_changes(self) -> set[str]:
        seen = _by_model(self.control.read())
        return {
            n
            for n in set(seen) | set(self._control_seen)
            if seen.get(n) != self._control_seen.get(n)
        }

    # --- the model-control API ----------------------------------------------------------------

    def load(self, name: str) -> ModelView:
        """Serve a model (again), re-reading its folder now; every worker follows."""
        files = self._model_files(name)

        def change(state: State) -> None:
            # A new generation each time: other workers see a change even when the
            # versions are the same, and re-read the folder (retrying failed versions).
            generation = state["models"].get(name, {}).get("generation", 0) + 1
            versions = list(files.versions) if self.explicit else None
            state["models"][name] = {
                "action": "load",
                "versions": versions,
                "generation": generation,
            }

        self.control.update(change)
        self.refresh(only={name}, retry={name})
        return self.registry.model(name)

    def not_loaded(self) -> dict[str, str]:
        """Model folders in the repository that this worker has never read, and why: in
        explicit mode those added since the start (the model-control API loads them), in
        poll mode those the next check will load. A repository that cannot be read: none."""
        try:
            found = repository.names(Path(self.settings.model_repository))
        except OSError:
            return {}
        why = NOT_LOADED_EXPLICIT if self.explicit else "new in the repository: not loaded yet"
        known = set(self.registry.names())
        return {name: why for name in found if name not in known}

    def unload(self, name: str) -> ModelView:
        """Stop serving every version of a model; every worker follows. Not the default
        model: without it an instance is not ready, and leaves its load balancer."""
        self._model_files(name)
        default, why = self.registry.default_model()
        if name == default:
            raise Conflict(
                f"model {name!r} is the default model ({why}): "
                "unloading it would make this instance unready"
            )

        def change(state: State) -> None:
            generation = state["models"].get(name, {}).get("generation", 0) + 1
            state["models"][name] = {"action": "unload", "versions": [], "generation": generation}

        self.control.update(change)
        self.refresh(only={name})
        return self.registry.model(name)

    def _model_files(self, name: str) -> repository.ModelFiles:
        root = Path(self.settings.model_repository)
        if not repository.NAME.fullmatch(name) or not (root / name).is_dir():
            raise ModelNotFound(
                f"model {name!r} not found in the repository",
                details={"available": self.registry.names()},
            )
        return repository.scan_model(root / name)

    # --- one pass -------------------------------------------------------------------------------

    def refresh(self, only: Collection[str] | None = None, retry: Collection[str] = ()) -> None:
        """Bring the registry in line with the repository and the control record (for the
        ``only`` models, or all); for the ``retry`` models, also versions that failed with
        the files they have now. One model's trouble never holds up the others."""
        with self._lock:
            root = Path(self.settings.model_repository)
            try:
                found = repository.scan(root)
            except OSError as exc:
                why = (
                    "does not exist"
                    if isinstance(exc, FileNotFoundError)
                    else f"cannot be read ({exc.strerror or type(exc).__name__})"
                )
                # Clients read this (readiness): the path goes to the log only.
                self.registry.repository_error = (
                    f"the model repository {why}; the versions loaded stay served"
                )
                log.error("model repository %s %s", root, why)
                self.registry.loaded_once = True
                return
            self.registry.repository_error = None
            state = self.control.read()
            control, holds = state["models"], state.get("holds", {})
            seen = _by_model(state)
            old_models = self.registry.models
            models = dict(old_models)
            names = set(found) | set(old_models)
            names = names if only is None else names & set(only)
            for name in sorted(names):
                old = old_models.get(name)
                try:
                    view = self._model(
                        name,
                        found.get(name),
                        control.get(name),
                        holds.get(name),
                        old,
                        name in retry,
                    )
                except Exception:  # a bug in one model's pass: keep what it served
                    log.exception("model %s: check failed; what it served stays", name)
                    continue
                if view is None:
                    models.pop(name, None)
                    _zero_weights(old)
                else:
                    models[name] = view
            # Only the models looked at are up to date with the record (another worker
            # may have changed the others since): the rest are picked up next time.
            for name in names | (set(seen) if only is None else set()):
                self._control_seen[name] = seen.get(name)
            if any(models.get(n) is not old_models.get(n) for n in set(models) | set(old_models)):
                self.registry.models = models
                self._retire(old_models, models)
            self.registry.loaded_once = True
            self._log_default_model()

    def _log_default_model(self) -> None:
        """Say which model answers requests that name none, at start and when it changes."""
        default = self.registry.default_model()
        if default == self._default_said:
            return
        self._default_said = default
        name, why = default
        if name is None:
            log.warning("no default model (%s): requests must name a model", why)
        else:
            log.info("default model: %s (%s)", name, why, extra={"model": name})

    def _model(
        self, name, files, control, record, old: ModelView | None, retry: bool
    ) -> ModelView | None:
        if files is None:
            return None  # the folder is gone: every version leaves
        if files.error is not None:  # unreadable for now: keep serving what was loaded
            log.error("model %s: %s", name, files.error, extra={"model": name})
            return old
        old_entries = old.entries if old else {}
        config, problems = self._config(name, files, old, record)
        candidates, why_not = policy.candidates(files.versions, control, self.explicit)
        promoted = policy.promoted(config, candidates, record, _unversioned(old))
        entries: dict[int, ModelEntry] = {}
        pinned, by_policy = config.pinned(), 0
        for number in sorted(candidates, reverse=True):
            path = files.path / str(number)
            held = policy.held(promoted, number)  # loaded, not counted by the policy
            wanted_now = held or policy.wanted(config, number, by_policy)
            if not (wanted_now or number in pinned):
                why = f"version policy {config.describe_policy()}"
                entries[number] = self.loader.unloaded(
                    name, number, path, old_entries.get(number), why
                )
                continue
            entry = self.loader.ensure(
                name, number, path, candidates[number], old_entries.get(number), retry
            )
            entries[number] = entry
            if entry.loaded and wanted_now and not held:
                by_policy += 1
        for number in files.versions:
            if number not in candidates:
                path = files.path / str(number)
                entries[number] = self.loader.unloaded(
                    name, number, path, old_entries.get(number), why_not
                )
        entries = dict(sorted(entries.items()))
        served = {v for v, e in entries.items() if e.loaded}
        found, weights = policy.problems(config, served, files.ignored, bool(candidates))
        problems += found
        unversioned = policy.unversioned(weights, served, promoted)
        if promoted is not None and candidates and not (served & promoted):
            problems.append(
                "new_versions hold: no promoted version is loaded"
                + (
                    f" (promoted: {sorted(promoted)})"
                    if promoted
                    else ": name the serving one in serving.json (labels.stable, weights or "
                    "version_policy specific)"
                )
                + "; requests that name no version are refused"
            )
        roles = {
            v: policy.role(config, v, promoted, v in unversioned)
            for v, e in entries.items()
            if e.status != "unloaded"
        }
        shadow, shadow_for = policy.shadow(config, entries, roles, problems)
        view = ModelView(
            name,
            entries,
            config,
            files.config,
            tuple(problems),
            WeightedChoice(weights) if weights else None,
            promoted,
            roles,
            shadow,
            config.shadow[1] if shadow is not None else 0.0,
            shadow_for,
        )
        self._keep_hold_record(name, config, record, promoted, problems)
        if old is not None and _same(old, view):
            return old
        _zero_weights(old, keep=set(weights))
        for v, share in (view.chooser.shares if view.chooser else {}).items():
            metrics.MODEL_WEIGHT.labels(name, str(v)).set(share)
        metrics.record_rules(name, roles, old.roles if old else {}, config.alerts)
        for problem in set(problems) - set(old.problems if old else ()):
            log.error("model %s: %s", name, problem, extra={"model": name})
        return view

    def _keep_hold_record(self, name, config, record, promoted, problems) -> None:
        """Under hold, remember the promoted versions in the instance's record (every worker,
        a worker that restarts, and the same rules once serving.json stops naming them keep
        them); forget them once new versions serve again, by a serving.json that was read."""
        if promoted and sorted(promoted) != (record or {}).get("promoted"):

            def remember(state: State) -> None:
                state.setdefault("holds", {})[name] = {"promoted": sorted(promoted)}

            self.control.update(remember)
        elif (
            promoted is None and record and not any(p.startswith("serving.json") for p in problems)
        ):

            def forget(state: State) -> None:
                state.setdefault("holds", {}).pop(name, None)

            self.control.update(forget)

    def promote(self, name: str, version: int | str) -> ModelView:
        """Under hold, put a version in service for requests that name none (every worker
        of this instance follows); 409 where serving.json names the promoted versions, new
        versions are served anyway, or the version is not loaded."""
        view = self.registry.model(name)
        config = view.config
        if not config.hold:
            raise Conflict(
                f"model {name!r} serves new versions as they appear (new_versions serve): "
                "there is nothing to promote"
            )
        if config.promoted():
            raise Conflict(
                f"model {name!r}: serving.json names the promoted versions (label stable, "
                "weights or version_policy specific): promote by editing it"
            )
        entry = view.version(version)
        if not entry.loaded:
            raise Conflict(
                f"model {name!r} version {entry.version} is {entry.status}: only a loaded "
                "version can be promoted",
                details={"error": entry.error},
            )

        def change(state: State) -> None:
            state.setdefault("holds", {})[name] = {"promoted": [entry.version]}

        self.control.update(change)
        self.refresh(only={name})
        return self.registry.model(name)

    def _config(
        self, name, files, old: ModelView | None, record
    ) -> tuple[ServingConfig, list[str]]:
        """serving.json (kept from the last pass while unchanged; a bad one keeps the rules
        that were in force, and is reported; a worker with none in force yet holds new
        versions where the instance holds them)."""
        if old is not None and old.config_fingerprint == files.config:
            kept = [p for p in old.problems if p.startswith("serving.json")]
            return old.config, kept
        if files.config is None:
            return ServingConfig(), []
        try:
            config = ServingConfig.read(files.path / repository.SERVING_FILE)
        except ServingConfigError as exc:
            metrics.MODEL_CONFIG_ERRORS.labels(name).inc()
            if old is not None:
                kept = old.config
            else:  # a worker that (re)starts now: the instance's hold stays a hold
                kept = ServingConfig(new_versions="hold") if record else ServingConfig()
            return kept, [f"{exc}; the previous rules stay in force"]
        log.info("model %s: serving.json %s", name, config.to_dict(), extra={"model": name})
        return config, []

    def _retire(self, old_models: dict[str, ModelView], models: dict[str, ModelView]) -> None:
        """Versions that were serving and are not any more: out of the view already; say
        so, and let their sessions go."""
        current = {id(e) for view in models.values() for e in view.entries.values()}
        retired = 0
        for view in old_models.values():
            for entry in view.entries.values():
                if entry.loaded and id(entry) not in current:
                    retired += 1
                    log.info(
                        "unloading model %s v%d: no new requests; its session is freed "
                        "when the requests in flight finish",
                        entry.name,
                        entry.version,
                        extra={"model": entry.name, "version": entry.version},
                    )
        if retired:
            gc.collect()


def _watch(ref: weakref.ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        lifecycle = ref()
        if lifecycle is None:
            return
        lifecycle.tick()
        del lifecycle


def _zero_weights(old: ModelView | None, keep: set[int] = frozenset()) -> None:
    """Versions no longer weighted get weight 0 in the metrics."""
    for v in set(old.chooser.versions if old and old.chooser else ()) - keep:
        metrics.MODEL_WEIGHT.labels(old.name, str(v)).set(0)


def _unversioned(view: ModelView | None) -> set[int]:
    """The versions that answered requests naming none, in a view (none: no view)."""
    if view is None:
        return set()
    weighted = view.chooser.versions if view.chooser else ()
    return policy.unversioned(weighted, {e.version for e in view.served}, view.promoted)


def _by_model(state: State) -> dict[str, tuple]:
    """Each model's part of the control record: its load/unload decision and hold record."""
    models, holds = state["models"], state.get("holds", {})
    return {n: (models.get(n), holds.get(n)) for n in set(models) | set(holds)}


def _same(old: ModelView, new: ModelView) -> bool:
    """Nothing to swap: the same entry objects, rules and problems."""
    return (
        list(old.entries) == list(new.entries)
        and all(old.entries[v] is new.entries[v] for v in new.entries)
        and old.config is new.config
        and old.problems == new.problems
        and old.config_fingerprint == new.config_fingerprint
        and old.promoted == new.promoted
    )
