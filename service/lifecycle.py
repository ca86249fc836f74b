"""Keeping a worker's registry in step with the repository and the model-control API.

One pass (:meth:`Lifecycle.refresh`): scan the repository (stat only), read the control
record, and for each model work out which versions to serve (serving.json's policy,
labels and weights; API loads and unloads). A new or changed version is loaded, checked
and warmed up *before* the new view is swapped in; a version that fails to load is
reported and whatever was serving keeps serving; a version no longer wanted leaves the
view, and its session is freed once the requests holding it finish.

Poll mode runs a pass every ``SERVING_POLL_INTERVAL_S``. Explicit mode reads the
repository when the instance starts and afterwards only on an API load. Either way every
worker follows the shared control record, so all workers serve the same versions within
one check of each other, and a restarted worker comes up in the current state.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
import weakref
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path

from service import metadata as contract
from service import metrics, repository
from service.batching import BatchingConfig, DynamicBatcher, config_for
from service.control import ControlStore, State
from service.errors import Conflict, ModelNotFound
from service.postprocessing import OutputSpec
from service.predictor import OnnxPredictor, usable_providers
from service.preprocessing import spec_from_dict
from service.registry import ModelEntry, ModelView, Registry
from service.serving_config import ServingConfig, ServingConfigError, WeightedChoice
from service.settings import Settings, model_overrides

log = logging.getLogger(__name__)

CONTROL_CHECK_S = 1.0  # how often the control record is read when nothing else is polled
UNLOADED_BY_API = "unloaded through the model-control API"
NOT_LOADED_EXPLICIT = "not loaded (explicit model control: load it through the API)"


class Lifecycle:
    """Loads, swaps and retires model versions for one worker's registry."""

    def __init__(self, settings: Settings, registry: Registry, control: ControlStore) -> None:
        self.settings, self.registry, self.control = settings, registry, control
        self.explicit = settings.model_control == "explicit"
        # Narrowed after the first session: a provider that cannot start (CUDA libraries
        # missing) is not retried, and not logged again, for every other model.
        self.providers, why = usable_providers(settings.providers)
        if why:
            log.info("CUDAExecutionProvider not used: %s; models run on %s", why,
                     ", ".join(self.providers) or "no provider")  # fmt: skip
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
        self._lock = threading.Lock()  # one pass at a time (watcher thread, API requests)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._control_seen: dict = {}

    # --- start, watch, stop -------------------------------------------------------------------

    def start(self, watch: bool = True) -> None:
        """The first pass (in explicit mode the first worker records what it loads), then
        a watcher thread where there is something to watch."""
        if self.explicit:
            root = Path(self.settings.model_repository)

            def first_start(state: State) -> None:
                if not state.get("initialized"):
                    found = repository.scan(root) if root.is_dir() else {}
                    state["models"] = {n: {"action": "load", "versions": list(f.versions)}
                                       for n, f in found.items()}  # fmt: skip
                    state["initialized"] = True

            self.control.update(first_start)
        self.refresh()
        _trim()  # reading and checking the files left freed heap behind
        interval = self.interval
        if watch and interval:
            # The thread holds the lifecycle weakly: an app that is dropped (tests build
            # many) takes its watcher with it.
            self._thread = threading.Thread(
                target=_watch, name="model-watcher", daemon=True,
                args=(weakref.ref(self), self._stop, interval),
            )  # fmt: skip
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
        models = self.control.read()["models"]
        return {n for n in set(models) | set(self._control_seen)
                if models.get(n) != self._control_seen.get(n)}  # fmt: skip

    # --- the model-control API ----------------------------------------------------------------

    def load(self, name: str) -> ModelView:
        """Serve a model (again), re-reading its folder now; every worker follows."""
        files = self._model_files(name)

        def change(state: State) -> None:
            # A new generation each time: other workers see a change even when the
            # versions are the same, and re-read the folder (retrying failed versions).
            generation = state["models"].get(name, {}).get("generation", 0) + 1
            versions = list(files.versions) if self.explicit else None
            state["models"][name] = {"action": "load", "versions": versions,
                                     "generation": generation}  # fmt: skip

        self.control.update(change)
        self.refresh(only={name}, retry={name})
        return self.registry.view(name)

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
        if name == self.settings.default_model:
            raise Conflict(f"model {name!r} is the default model (SERVING_DEFAULT_MODEL): "
                           "unloading it would make this instance unready")  # fmt: skip

        def change(state: State) -> None:
            generation = state["models"].get(name, {}).get("generation", 0) + 1
            state["models"][name] = {"action": "unload", "versions": [],
                                     "generation": generation}  # fmt: skip

        self.control.update(change)
        self.refresh(only={name})
        return self.registry.view(name)

    def _model_files(self, name: str) -> repository.ModelFiles:
        root = Path(self.settings.model_repository)
        if not repository.NAME.fullmatch(name) or not (root / name).is_dir():
            raise ModelNotFound(f"model {name!r} not found in the repository",
                                details={"available": self.registry.names()})  # fmt: skip
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
                why = ("does not exist" if isinstance(exc, FileNotFoundError)
                       else f"cannot be read ({exc.strerror or type(exc).__name__})")  # fmt: skip
                # Clients read this (readiness): the path goes to the log only.
                self.registry.repository_error = (
                    f"the model repository {why}; the versions loaded stay served"
                )
                log.error("model repository %s %s", root, why)
                self.registry.loaded_once = True
                return
            self.registry.repository_error = None
            control = self.control.read()["models"]
            old_models = self.registry.models
            models = dict(old_models)
            names = set(found) | set(old_models)
            names = names if only is None else names & set(only)
            for name in sorted(names):
                old = old_models.get(name)
                try:
                    view = self._model(name, found.get(name), control.get(name), old,
                                       name in retry)  # fmt: skip
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
            for name in names | (set(control) if only is None else set()):
                self._control_seen[name] = control.get(name)
            if any(models.get(n) is not old_models.get(n) for n in set(models) | set(old_models)):
                self.registry.models = models
                self._retire(old_models, models)
            self.registry.loaded_once = True

    def _model(self, name, files, control, old: ModelView | None, retry: bool) -> ModelView | None:
        if files is None:
            return None  # the folder is gone: every version leaves
        if files.error is not None:  # unreadable for now: keep serving what was loaded
            log.error("model %s: %s", name, files.error, extra={"model": name})
            return old
        old_entries = old.entries if old else {}
        config, problems = self._config(name, files, old)
        if control and control.get("action") == "unload":
            candidates, why_not = {}, UNLOADED_BY_API
        elif self.explicit:
            wanted = set(control.get("versions", [])) if control else set()
            candidates = {v: fp for v, fp in files.versions.items() if v in wanted}
            why_not = NOT_LOADED_EXPLICIT
        else:
            candidates, why_not = files.versions, ""
        entries: dict[int, ModelEntry] = {}
        pinned, by_policy = config.pinned(), 0
        for number in sorted(candidates, reverse=True):
            path = files.path / str(number)
            if config.policy == "all":
                wanted_now = True
            elif config.policy == "latest":
                wanted_now = by_policy < config.latest
            else:
                wanted_now = number in config.specific
            if not (wanted_now or number in pinned):
                entries[number] = self._unloaded(
                    name,
                    number,
                    path,
                    old_entries.get(number),
                    f"version policy {config.describe_policy()}",
                )
                continue
            entry = self._ensure(name, number, path, candidates[number], old_entries.get(number),
                                 retry)  # fmt: skip
            entries[number] = entry
            if entry.loaded and wanted_now:
                by_policy += 1
        for number in files.versions:
            if number not in candidates:
                entries[number] = self._unloaded(name, number, files.path / str(number),
                                                 old_entries.get(number), why_not)  # fmt: skip
        entries = dict(sorted(entries.items()))
        problems += [f"folder {n!r} is not a version number (1, 2, ... without leading zeros): "
                     "ignored" for n in files.ignored]  # fmt: skip
        served = {v for v, e in entries.items() if e.loaded}
        if candidates:  # (an unloaded model's labels name nothing served, as expected)
            problems += [f"label {label!r} names version {v}, which is not served"
                         for label, v in config.labels.items() if v not in served]  # fmt: skip
        weights = {v: w for v, w in config.weights.items() if v in served}
        if config.weights and not weights and candidates:
            problems.append("no version that the weights name is served: requests without "
                            "a version get the latest")  # fmt: skip
        view = ModelView(name, entries, config, files.config, tuple(problems),
                         WeightedChoice(weights) if weights else None)  # fmt: skip
        if old is not None and _same(old, view):
            return old
        _zero_weights(old, keep=set(weights))
        for v, share in (view.chooser.shares if view.chooser else {}).items():
            metrics.MODEL_WEIGHT.labels(name, str(v)).set(share)
        for problem in set(problems) - set(old.problems if old else ()):
            log.error("model %s: %s", name, problem, extra={"model": name})
        return view

    def _config(self, name, files, old: ModelView | None) -> tuple[ServingConfig, list[str]]:
        """serving.json (kept from the last pass while unchanged; a bad one keeps the rules
        that were in force, and is reported)."""
        if old is not None and old.config_fingerprint == files.config:
            kept = [p for p in old.problems if p.startswith("serving.json")]
            return old.config, kept
        if files.config is None:
            return ServingConfig(), []
        try:
            config = ServingConfig.read(files.path / repository.SERVING_FILE)
        except ServingConfigError as exc:
            metrics.MODEL_CONFIG_ERRORS.labels(name).inc()
            kept = old.config if old is not None else ServingConfig()
            return kept, [f"{exc}; the previous rules stay in force"]
        log.info("model %s: serving.json %s", name, config.to_dict(), extra={"model": name})
        return config, []

    def _ensure(self, name, number, path, fingerprint, old: ModelEntry | None,
                retry: bool = False) -> ModelEntry:  # fmt: skip
        """The loaded (or failed) entry for a version's current files."""
        if (
            old is not None
            and old.fingerprint == fingerprint
            and (old.loaded or (old.status == "failed" and not retry))
        ):
            return old  # unchanged (a failed version is retried when its files change)
        if old is None or not old.loaded:
            return self._load(name, number, path, fingerprint)
        try:
            digest = repository.content_digest(path)
        except OSError:
            digest = None
        if digest == old.digest:
            old.fingerprint = fingerprint  # touched or copied over with the same bytes
            old.notice = None  # (or restored after a failed change)
            return old
        new = self._load(name, number, path, fingerprint)
        if new.loaded:
            return new
        old.fingerprint = fingerprint  # retried when the files change again
        old.notice = f"changed files failed to load ({new.error}); serving the previous ones"
        log.error("model %s v%d: %s", name, number, old.notice)
        return old

    def _unloaded(self, name, number, path, old: ModelEntry | None, why: str) -> ModelEntry:
        if old is not None and old.status == "unloaded" and old.error == why:
            return old
        if old is not None and old.loaded:
            metrics.record_model(name, number, False, 0.0, None)
        return ModelEntry(name, number, path, status="unloaded", error=why)

    def _load(self, name: str, number: int, path: Path, fingerprint) -> ModelEntry:
        """Read, validate, checksum, create the session, warm it up (entry: loaded or failed)."""
        entry = ModelEntry(name, number, path, fingerprint=fingerprint)
        started = time.perf_counter()
        try:
            entry.digest = repository.content_digest(path)
            meta = contract.read(path, verify_checksum=self.settings.verify_checksums)
            batching = config_for(self.batching, self.batching_overrides, name)
            predictor = OnnxPredictor(path, meta, self.providers, self.settings.intra_op_threads,
                                      self.settings.inter_op_threads,
                                      max_rows=batching.max_batch_size)  # fmt: skip
            predictor.load()
            self.providers = [p for p in self.providers if p in predictor.providers]
            entry.metadata, entry.predictor = meta, predictor
            entry.spec = spec_from_dict(meta["preprocessing"])
            entry.output = OutputSpec.from_dict(meta["output"])
            entry.status = "loaded"
            if batching.enabled:
                entry.batcher = DynamicBatcher(name, number, predictor.predict, batching)
            finalizer = weakref.finalize(predictor, _released, name, number)
            finalizer.atexit = False
            log.info(
                "loaded model %s v%d on %s in %.3f s",
                name,
                number,
                predictor.provider,
                time.perf_counter() - started,
                extra={"model": name, "version": number},
            )
        except Exception as exc:  # any failure: report it, serve the other versions
            # Paths inside the repository, never the machine's: clients read this.
            message = f"{type(exc).__name__}: {exc}"
            for root in {str(Path(self.settings.model_repository)),
                         str(Path(self.settings.model_repository).resolve())}:  # fmt: skip
                message = message.replace(root + "/", "").replace(root, "(repository)")
            entry.status, entry.error = "failed", message
            metrics.MODEL_LOAD_FAILURES.labels(name, str(number)).inc()
            log.error("model %s v%d failed to load: %s", name, number, entry.error,
                      extra={"model": name, "version": number})  # fmt: skip
        entry.load_seconds = time.perf_counter() - started
        metrics.record_model(name, number, entry.loaded, entry.load_seconds, entry.provider)
        return entry

    def _retire(self, old_models: dict[str, ModelView], models: dict[str, ModelView]) -> None:
        """Versions that were serving and are not any more: out of the view already; say
        so, and let their sessions go."""
        current = {id(e) for view in models.values() for e in view.entries.values()}
        serving = _keys(models)  # (name, version) still loaded, by a replacement or as was
        retired = 0
        for view in old_models.values():
            for entry in view.entries.values():
                if entry.loaded and id(entry) not in current:
                    retired += 1
                    if (entry.name, entry.version) not in serving:
                        metrics.record_model(entry.name, entry.version, False, 0.0, None)
                    log.info("unloading model %s v%d: no new requests; its session is freed "
                             "when the requests in flight finish", entry.name, entry.version,
                             extra={"model": entry.name, "version": entry.version})  # fmt: skip
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


def _keys(models: dict[str, ModelView]) -> set[tuple[str, int]]:
    return {(e.name, e.version) for view in models.values() for e in view.entries.values()
            if e.loaded}  # fmt: skip


def _same(old: ModelView, new: ModelView) -> bool:
    """Nothing to swap: the same entry objects, rules and problems."""
    return (list(old.entries) == list(new.entries)
            and all(old.entries[v] is new.entries[v] for v in new.entries)
            and old.config is new.config and old.problems == new.problems
            and old.config_fingerprint == new.config_fingerprint)  # fmt: skip


def _released(name: str, version: int) -> None:
    """A retired version's last reference is gone: its session's memory is freed."""
    log.info("released model %s v%d", name, version, extra={"model": name, "version": version})
    _trim()


def _trim() -> None:
    """Hand freed heap back to the operating system (glibc keeps it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
