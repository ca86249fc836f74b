"""Tensor -> onnxruntime logits -> probabilities -> one result per instance."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from service import metrics
from service.errors import ApiError, InferenceFailed
from service.postprocessing import predicted_indices, probabilities
from service.postprocessing import top_k as most_probable

if TYPE_CHECKING:  # the registry imports this module
    from service.registry import ModelEntry

log = logging.getLogger(__name__)


def run_model(entry: ModelEntry, batch: np.ndarray) -> np.ndarray:
    """Logits for a request's batch: through the model's dynamic batcher when it has one."""
    if entry.batcher is not None:
        return entry.batcher.predict(batch)
    return timed_run(entry, batch)


def timed_run(entry: ModelEntry, batch: np.ndarray) -> np.ndarray:
    """The one place ``session.run`` is called: times it and records the batch size."""
    labels = (entry.name, str(entry.version))
    started = time.perf_counter()
    logits = entry.predictor.predict(batch)
    metrics.child(metrics.INFERENCE_DURATION, *labels).observe(time.perf_counter() - started)
    metrics.child(metrics.BATCH_SIZE, *labels).observe(batch.shape[0])
    return logits


def predict(
    entry: ModelEntry, batch: np.ndarray, top_k: int | None = None, with_logits: bool = False
) -> list[dict[str, Any]]:
    """Run the model and shape its logits into labels, confidences and probabilities."""
    try:
        logits = run_model(entry, batch)
    except ApiError:
        raise
    except Exception as exc:  # validated input made onnxruntime fail: our fault, not the client's
        log.exception("inference failed for %s v%d", entry.name, entry.version)
        raise InferenceFailed(
            f"inference failed in model {entry.name!r}: {type(exc).__name__}"
        ) from exc
    return results(logits, entry.metadata["classes"], top_k, with_logits)


def results(
    logits: np.ndarray, classes: list[str], top_k: int | None = None, with_logits: bool = False
) -> list[dict[str, Any]]:
    """One dict per row: label, index, confidence, probabilities (all or the top k)."""
    probs = probabilities(logits)
    winners = predicted_indices(logits)
    k = len(classes) if top_k is None else min(top_k, len(classes))
    best = most_probable(probs, classes, k)
    out = []
    for row, (p, pairs, win) in enumerate(zip(probs, best, winners, strict=True)):
        item: dict[str, Any] = {
            "label": classes[win],
            "index": int(win),
            "confidence": float(p[win]),
            "probabilities": dict(pairs),
        }
        if with_logits:
            item["logits"] = [float(v) for v in logits[row]]
        out.append(item)
    return out
