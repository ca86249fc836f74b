"""Shadow traffic: a share of the answered requests also run on a model's shadow version,
off the request's path, and the two answers compared.

The dataplane hands over the request's own input tensor and served probabilities after
the answer is made (no second decode). They wait in a bounded queue: when it is full the
comparison is dropped and counted, so the live answer never waits. One thread per worker
drains the queue at the lowest CPU priority, running everything queued for one (serving,
shadow) pair as one onnxruntime call, and records per instance: top-1 agreement, |dp| of
the served class, KL(served || shadow) and the label flip (served -> shadow class).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import defaultdict

import numpy as np

from service import metrics
from service.models.registry import ModelEntry

log = logging.getLogger(__name__)

FLIP_SERIES = 20  # label-flip pairs given their own series, per (model, versions) and worker
OTHER = "other"
_TINY = 1e-12  # probabilities below this count as this in the KL (a 0 would make it infinite)


class _Pair:
    """One (serving version, shadow version)'s metric children."""

    def __init__(self, served: ModelEntry, shadow: ModelEntry) -> None:
        labels = (served.name, str(served.version), str(shadow.version))
        self.labels = labels
        self.agree = metrics.SHADOW_COMPARISONS.labels(*labels, "agree")
        self.disagree = metrics.SHADOW_COMPARISONS.labels(*labels, "disagree")
        self.delta = metrics.SHADOW_DELTA.labels(*labels)
        self.kl = metrics.SHADOW_KL.labels(*labels)
        self.dropped = metrics.SHADOW_DROPPED.labels(*labels)
        self.flips: dict[tuple[str, str], object] = {}

    def flip(self, served: str, shadow: str):
        key = (served, shadow)
        counter = self.flips.get(key)
        if counter is None:
            if len(self.flips) >= FLIP_SERIES:
                key = (OTHER, OTHER)
                counter = self.flips.get(key)
            if counter is None:
                counter = metrics.SHADOW_FLIPS.labels(*self.labels, *key)
                self.flips[key] = counter
        return counter


class Shadow:
    """The worker's shadow queue and the thread that runs it."""

    def __init__(self, capacity: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._pairs: dict[tuple[int, int], _Pair] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _pair(self, served: ModelEntry, shadow: ModelEntry) -> _Pair:
        key = (id(served), id(shadow))
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _Pair(served, shadow)
        return pair

    def submit(
        self,
        served: ModelEntry,
        shadow: ModelEntry,
        tensor: np.ndarray,
        probs: np.ndarray,
        winners: np.ndarray,
    ) -> None:
        """Queue one answered batch (its input tensor, probabilities and winning classes)
        for comparison, or count it dropped: never waits."""
        self._start()
        try:
            self._queue.put_nowait((served, shadow, tensor, probs, winners))
        except queue.Full:
            self._pair(served, shadow).dropped.inc(len(probs))

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        # Linux gives each thread its own nice value: the shadow runs on what live
        # requests leave over.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            jobs = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(jobs) < self._queue.maxsize:
                    jobs.append(self._queue.get_nowait())
            groups = defaultdict(list)
            for job in jobs:
                groups[(id(job[0]), id(job[1]))].append(job)
            for group in groups.values():
                try:
                    self.compare(group)
                except Exception:  # the shadow must never take the worker down
                    log.exception("shadow comparison failed")
            for _ in jobs:
                self._queue.task_done()

    def compare(self, jobs: list) -> None:
        """Run one pair's queued batches as one call on the shadow and record the outcome."""
        served, shadow = jobs[0][0], jobs[0][1]
        tensor, p, won = (
            (np.concatenate([job[i] for job in jobs]) for i in (2, 3, 4))
            if len(jobs) > 1
            else jobs[0][2:]
        )
        outputs = shadow.predictor.predict(tensor)
        q = shadow.output.probabilities(outputs)
        shadow_won = shadow.output.indices(outputs)
        rows = np.arange(len(p))
        delta = np.abs(p[rows, won] - q[rows, won])
        kl = np.sum(p * (np.log(np.maximum(p, _TINY)) - np.log(np.maximum(q, _TINY))), axis=1)
        pair = self._pair(served, shadow)
        agreed = won == shadow_won
        pair.agree.inc(int(agreed.sum()))
        pair.disagree.inc(int(len(p) - agreed.sum()))
        metrics.observe_many(pair.delta, delta)
        metrics.observe_many(pair.kl, np.maximum(kl, 0.0))
        classes, shadow_classes = served.metadata["classes"], shadow.metadata["classes"]
        flips = defaultdict(int)
        for i in np.flatnonzero(~agreed).tolist():
            flips[(classes[won[i]], shadow_classes[shadow_won[i]])] += 1
        for (a, b), count in flips.items():
            pair.flip(a, b).inc(count)

    def idle(self, timeout: float = 5.0) -> bool:
        """Whether every queued comparison was made within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


_SUMMED = {
    "shadow_comparisons_total": "comparisons",
    "shadow_dropped_total": "dropped",
    "shadow_probability_delta_sum": "delta_sum",
    "shadow_kl_divergence_sum": "kl_sum",
}


def summaries(views: dict) -> dict[str, list[dict]]:
    """Each model's comparisons so far, per (serving version, shadow version), summed over
    the instance's workers (read from the metrics every worker writes); only versions the
    model's rules still serve."""
    pairs: dict[tuple[str, int, int], dict] = {}
    for family in metrics.current_registry().collect():
        if not family.name.startswith("shadow_"):
            continue
        for sample in family.samples:
            labels = sample.labels
            view = views.get(labels.get("model"))
            if view is None:
                continue
            served, shadow = int(labels["version"]), int(labels["shadow_version"])
            if served not in view.roles or shadow not in view.roles:
                continue
            key = (view.name, served, shadow)
            pair = pairs.get(key)
            if pair is None:
                pair = pairs[key] = dict.fromkeys(
                    ("agreements", "disagreements", "dropped", "delta_sum", "kl_sum"), 0.0
                )
                pair["flips"] = defaultdict(float)
            field = _SUMMED.get(sample.name)
            if field == "comparisons":
                pair["agreements" if labels["outcome"] == "agree" else "disagreements"] += (
                    sample.value
                )
            elif field:
                pair[field] += sample.value
            elif sample.name == "shadow_label_flips_total":
                pair["flips"][(labels["served_label"], labels["shadow_label"])] += sample.value
    found: dict[str, list[dict]] = defaultdict(list)
    for (name, served, shadow), pair in sorted(pairs.items()):
        found[name].append(_summary(served, shadow, pair))
    return found


def _summary(served: int, shadow: int, pair: dict) -> dict:
    agreements, disagreements = int(pair["agreements"]), int(pair["disagreements"])
    n = agreements + disagreements
    flips = pair["flips"]
    other = flips.pop((OTHER, OTHER), 0.0)
    ranked = sorted(flips.items(), key=lambda item: (-item[1], item[0]))
    other += sum(count for _, count in ranked[FLIP_SERIES:])
    return {
        "version": served,
        "shadow_version": shadow,
        "comparisons": n,
        "agreements": agreements,
        "agreement_rate": round(agreements / n, 6) if n else None,
        "mean_abs_delta": round(pair["delta_sum"] / n, 6) if n else None,
        "mean_kl": round(pair["kl_sum"] / n, 6) if n else None,
        "dropped": int(pair["dropped"]),
        "flips": [
            {"served": a, "shadow": b, "count": int(count)}
            for (a, b), count in ranked[:FLIP_SERIES]
        ],
        "other_flips": int(other),
    }
