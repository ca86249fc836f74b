"""Per-model statistics in the shape of Triton's statistics extension, from the metrics.

The counts come from the Prometheus metrics every worker writes (multiprocess files under
gunicorn), so a statistics request answered by any worker reports the sum over all of them:

- success / fail: ``model_request_duration_seconds`` by outcome;
- queue: ``batch_queue_duration_seconds`` (the dynamic batcher's wait);
- compute_input / compute_infer / compute_output: preprocessing, ``session.run`` and
  post-processing durations; execution_count is the number of ``session.run`` calls;
- inference_count: instances predicted; last_inference: milliseconds since the epoch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from service import metrics
from service.models.registry import ModelEntry

_PHASES = {
    "queue": "batch_queue_duration_seconds",
    "compute_input": "preprocessing_duration_seconds",
    "compute_infer": "inference_duration_seconds",
    "compute_output": "postprocessing_duration_seconds",
}
_LAST = "model_last_inference_timestamp_seconds"


def _samples() -> dict[tuple[str, str, str, str], float]:
    """(sample name, model, version, outcome) -> value, summed over workers and labels."""
    totals: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for family in metrics.current_registry().collect():
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            key = (
                sample.name,
                model,
                sample.labels.get("version", ""),
                sample.labels.get("outcome", ""),
            )
            if sample.name == _LAST:  # a time: the latest, not a sum
                totals[key] = max(totals[key], sample.value)
            else:
                totals[key] += sample.value
    return totals


def _duration(totals: dict, metric: str, model: str, version: str, outcome: str = ""):
    return {
        "count": int(totals.get((f"{metric}_count", model, version, outcome), 0)),
        "ns": round(totals.get((f"{metric}_sum", model, version, outcome), 0.0) * 1e9),
    }


def model_stats(entries: Iterable[ModelEntry]) -> list[dict[str, Any]]:
    """One statistics object per model version."""
    totals = _samples()
    stats = []
    for entry in entries:
        name, version = entry.name, str(entry.version)
        requests = "model_request_duration_seconds"
        inference = {
            "success": _duration(totals, requests, name, version, "success"),
            "fail": _duration(totals, requests, name, version, "fail"),
            **{
                phase: _duration(totals, metric, name, version) for phase, metric in _PHASES.items()
            },
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        }
        last = totals.get((_LAST, name, version, ""), 0.0)
        stats.append(
            {
                "name": name,
                "version": version,
                "last_inference": int(last * 1000),
                "inference_count": int(totals.get(("predictions_total", name, version, ""), 0)),
                "execution_count": inference["compute_infer"]["count"],
                "inference_stats": inference,
                "batch_stats": [],
                "memory_usage": [],
            }
        )
    return stats
