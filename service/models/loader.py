"""Loading one model version: read and check its files, start its onnxruntime session, warm
it up, and wrap it in a batcher where batching is on.

A version that fails to load becomes an entry that says why; a version whose files change
and then fail keeps serving its previous files. A retired version's session is freed when
the last request holding it lets go.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
import weakref
from dataclasses import fields
from pathlib import Path

from service import metrics
from service.contract import metadata as contract
from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import spec_from_dict
from service.models import repository
from service.models.batching import BatchingConfig, DynamicBatcher, config_for
from service.models.predictor import OnnxPredictor, usable_providers
from service.models.registry import ModelEntry
from service.settings import Settings, model_overrides

log = logging.getLogger(__name__)


class Loader:
    """Loads versions for one worker: its providers, threads and batching settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Narrowed after the first session: a provider that cannot start (CUDA libraries
        # missing) is not retried, and not logged again, for every other model.
        self.providers, why = usable_providers(settings.providers)
        if why:
            log.info(
                "CUDAExecutionProvider not used: %s; models run on %s",
                why,
                ", ".join(self.providers) or "no provider",
            )
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

    def ensure(
        self, name, number, path, fingerprint, old: ModelEntry | None, retry: bool = False
    ) -> ModelEntry:
        """The loaded (or failed) entry for a version's current files."""
        if (
            old is not None
            and old.fingerprint == fingerprint
            and (old.loaded or (old.status == "failed" and not retry))
        ):
            return old  # unchanged (a failed version is retried when its files change)
        if old is None or not old.loaded:
            return self.load(name, number, path, fingerprint)
        try:
            digest = repository.content_digest(path)
        except OSError:
            digest = None
        if digest == old.digest:
            old.fingerprint = fingerprint  # touched or copied over with the same bytes
            old.notice = None  # (or restored after a failed change)
            return old
        new = self.load(name, number, path, fingerprint)
        if new.loaded:
            return new
        old.fingerprint = fingerprint  # retried when the files change again
        old.notice = f"changed files failed to load ({new.error}); serving the previous ones"
        log.error("model %s v%d: %s", name, number, old.notice)
        return old

    def unloaded(self, name, number, path, old: ModelEntry | None, why: str) -> ModelEntry:
        if old is not None and old.status == "unloaded" and old.error == why:
            return old
        # model_loaded is left as it was: 0 means "should serve and cannot", and /metrics
        # shows no series of a version the rules do not serve (Registry.keeps_series).
        return ModelEntry(name, number, path, status="unloaded", error=why)

    def load(self, name: str, number: int, path: Path, fingerprint) -> ModelEntry:
        """Read, validate, checksum, create the session, warm it up (entry: loaded or failed)."""
        entry = ModelEntry(name, number, path, fingerprint=fingerprint)
        started = time.perf_counter()
        try:
            entry.digest = repository.content_digest(path)
            meta = contract.read(path, verify_checksum=self.settings.verify_checksums)
            batching = config_for(self.batching, self.batching_overrides, name)
            predictor = OnnxPredictor(
                path,
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
            for root in {
                str(Path(self.settings.model_repository)),
                str(Path(self.settings.model_repository).resolve()),
            }:
                message = message.replace(root + "/", "").replace(root, "(repository)")
            entry.status, entry.error = "failed", message
            metrics.MODEL_LOAD_FAILURES.labels(name, str(number)).inc()
            log.error(
                "model %s v%d failed to load: %s",
                name,
                number,
                entry.error,
                extra={"model": name, "version": number},
            )
        entry.load_seconds = time.perf_counter() - started
        metrics.record_model(name, number, entry.loaded, entry.load_seconds, entry.provider)
        return entry


def _released(name: str, version: int) -> None:
    """A retired version's last reference is gone: its session's memory is freed."""
    log.info("released model %s v%d", name, version, extra={"model": name, "version": version})
    trim_heap()


def trim_heap() -> None:
    """Hand freed heap back to the operating system (glibc keeps it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
