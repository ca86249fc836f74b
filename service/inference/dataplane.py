"""The dataplane: one inference request -> one result, whatever protocol carried it.

No HTTP here. A protocol codec decodes its wire format into an :class:`InferRequest`
(model, version, inputs) and encodes the :class:`InferResult` (logits, probabilities,
winning classes) in its own shape. Model resolution, request limits, preprocessing, the
dynamic batcher, the softmax/sigmoid, the model metrics and the hand-over to the shadow
version (:mod:`service.inference.shadow`) happen here, once.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import numpy as np

from service.errors import ApiError, InferenceFailed, ValidationFailed
from service.inference.inputs import Inputs
from service.inference.limits import LimitTable
from service.inference.shadow import Shadow
from service.models.registry import ModelEntry, Registry
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InferRequest:
    """What to run: a model (or the default), a version (or the latest), and the inputs.

    ``started`` is when the protocol began decoding the request, so that preprocessing and
    request durations include parsing; ``entry`` skips resolution when the codec needed the
    model to decode (V2 input names).
    """

    inputs: Inputs
    model: str | None = None
    version: int | str | None = None
    started: float = 0.0
    entry: ModelEntry | None = None


@dataclass(slots=True)
class InferResult:
    """A request's answer: the model's raw output (``logits``, or probabilities for a model
    that outputs them), probabilities (float64) and winning indices."""

    entry: ModelEntry
    logits: np.ndarray
    probabilities: np.ndarray
    indices: np.ndarray
    tensor: np.ndarray | None = None  # the model's input batch (after preprocessing)

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return self.entry.metadata["classes"]

    @property
    def instances(self) -> int:
        """Rows in the batch."""
        return len(self.indices)


class DataPlane:
    """Runs inference requests against the registry's models."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings, self.registry = settings, registry
        self.limits = LimitTable(settings)
        self.shadow = Shadow(settings.shadow_queue, settings.shadow_queue_mb << 20)

    def infer(self, request: InferRequest) -> InferResult:
        """Resolve, check limits, preprocess, run (batched), post-process, record metrics."""
        started = request.started or time.perf_counter()
        entry = request.entry or self.registry.version(request.model, request.version)
        meters = entry.meters
        try:
            batch = request.inputs.tensor(entry.spec, self.limits.of(entry.name))
            if not np.isfinite(batch).all():  # a number beyond float32, or one made so
                rows = np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
                raise ValidationFailed(
                    f"instance(s) {rows[:10].tolist()} hold numbers that are not finite as "
                    "float32 (beyond ±3.4e38, or after the model's standardisation)",
                    details={"instances": rows[:100].tolist()},
                )
            ran = time.perf_counter()
            meters.preprocessing.observe(ran - started)
            timings = getattr(request.inputs, "timings", None)
            if timings is not None and timings[0]:
                meters.images(*timings)
            logits = self._run(entry, batch)
            finished = time.perf_counter()
            if not np.isfinite(logits).all():
                rows = np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist()
                raise ValidationFailed(
                    f"the model's output is not finite for instance(s) {rows[:10]}: inputs far "
                    "outside the range the model was trained on",
                    details={"instances": rows[:100]},
                )
            probs = entry.output.probabilities(logits)
            winners = entry.output.indices(logits)
            classes = entry.metadata["classes"]
            # The winner's probability is the row's largest (ties: either is the same value).
            meters.predicted([classes[i] for i in winners.tolist()], probs.max(axis=1).tolist())
            done = time.perf_counter()
            meters.postprocessing.observe(done - finished)
        except ApiError:
            meters.fail.observe(time.perf_counter() - started)
            raise
        meters.success.observe(done - started)
        meters.last_inference.set(time.time())
        view = self.registry.models.get(entry.name)
        if (
            view is not None
            and view.shadow is not None
            and entry.version in view.shadow_for
            and (view.shadow_fraction >= 1.0 or random.random() < view.shadow_fraction)
        ):
            self.shadow.submit(entry, view.shadow, batch, probs, winners)
        return InferResult(entry, logits, probs, winners, batch)

    @staticmethod
    def _run(entry: ModelEntry, batch: np.ndarray) -> np.ndarray:
        try:
            if entry.batcher is not None:
                return entry.batcher.predict(batch)
            return entry.predictor.predict(batch)
        except ApiError:
            raise
        except Exception as exc:  # validated input made onnxruntime fail: our fault
            log.exception("inference failed for %s v%d", entry.name, entry.version)
            raise InferenceFailed(
                f"inference failed in model {entry.name!r}: {type(exc).__name__}"
            ) from exc
