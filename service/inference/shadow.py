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

import collections
import contextlib
import json
import logging
import os
import select
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from service import metrics
from service.models.registry import ModelEntry

log = logging.getLogger(__name__)

FLIP_SERIES = 20  # label-flip pairs given their own series, per (model, versions) and worker
OTHER = "other"
_TINY = 1e-12  # probabilities below this count as this in the KL (a 0 would make it infinite)


SWITCH_INTERVAL_S = 0.0005  # the GIL's, in a worker that runs a shadow
PUBLISH_EVERY_S = 0.25  # how often, at most, the metrics are brought up to date
GATHER, GATHER_S = 32, 0.01  # a batch of fewer requests waits this long for more first
FLIPS_FILE = "shadow-flips."  # + pid + ".json", in the multiprocess folder: exact pair counts
_FLIPS: dict[str, Counter] = defaultdict(Counter)  # this process's: "model|v|sv" -> pairs


def _key(model: str, version: int, shadow_version: int) -> str:
    return f"{model}|{version}|{shadow_version}"


class _Pair:
    """One (model, serving version, shadow version)'s metric children, and what was
    compared since they were last brought up to date."""

    def __init__(self, model: str, version: int, shadow_version: int) -> None:
        labels = (model, str(version), str(shadow_version))
        self.key = _key(model, version, shadow_version)
        self.labels = labels
        self.agree = metrics.SHADOW_COMPARISONS.labels(*labels, "agree")
        self.disagree = metrics.SHADOW_COMPARISONS.labels(*labels, "disagree")
        self.delta = metrics.SHADOW_DELTA.labels(*labels)
        self.kl = metrics.SHADOW_KL.labels(*labels)
        self.dropped = metrics.SHADOW_DROPPED.labels(*labels)
        self.failed = metrics.SHADOW_FAILURES.labels(*labels)
        self.flips: dict[tuple[str, str], object] = {}
        self.pending = _Pending()
        self.meters: metrics.ModelMeters | None = None  # the shadow version's own

    def flip(self, served: str, shadow: str):
        """The counter of a label pair: its own for the first FLIP_SERIES pairs, then
        ``other`` (the metric's labels stay bounded; /models ranks the exact counts)."""
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

    def publish(self) -> None:
        """Bring the metrics up to date with what was compared (one update each)."""
        pending, self.pending = self.pending, _Pending()
        if pending.agree:
            self.agree.inc(pending.agree)
        if pending.disagree:
            self.disagree.inc(pending.disagree)
        if pending.failed:
            self.failed.inc(pending.failed)
        if pending.deltas:
            metrics.observe_many(self.delta, np.concatenate(pending.deltas))
            metrics.observe_many(self.kl, np.concatenate(pending.kls))
        for (a, b), count in pending.flips.items():
            self.flip(a, b).inc(count)
        _FLIPS[self.key].update(pending.flips)
        if pending.runs and self.meters is not None:  # the shadow version's own cost
            seconds, rows = zip(*pending.runs, strict=True)
            metrics.observe_many(self.meters.inference, np.array(seconds))
            metrics.observe_many(self.meters.batch_size, np.array(rows))


class _Pending:
    """Comparisons not yet in the metrics."""

    __slots__ = ("agree", "deltas", "disagree", "failed", "flips", "kls", "runs")

    def __init__(self) -> None:
        self.agree = self.disagree = self.failed = 0
        self.deltas: list[np.ndarray] = []
        self.kls: list[np.ndarray] = []
        self.flips: Counter = Counter()
        self.runs: list[tuple[float, int]] = []  # the shadow's onnxruntime calls: (s, rows)


class Shadow:
    """The worker's shadow queue and the thread that runs it.

    The live side only appends to a deque (atomic) and, where the thread sleeps, writes a
    byte to a pipe: it shares no lock with a thread that runs at the lowest priority and may be
    descheduled holding one. The thread gathers requests into batches (a moment's wait),
    and brings the metrics (whose multiprocess values share one lock with the live
    requests' own) up to date four times a second at most, not once per comparison: its
    Python work, which holds the GIL, is per batch. The caps are checked without a lock: a few
    concurrent requests may overshoot them by one request each.
    """

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self._jobs: collections.deque = collections.deque()
        self._bytes_in = self._bytes_out = 0  # of the input tensors queued, and taken
        self._busy = False  # a batch taken and not yet recorded
        self._closed = False
        self._sleeping = False
        self._wake: tuple[int, int] | None = None  # the pipe the thread sleeps on
        self._lock = threading.Lock()  # starting and stopping the thread only
        self._pairs: dict[tuple[str, int, int], _Pair] = {}
        self._thread: threading.Thread | None = None
        self._flips_loaded = False
        self._published = 0.0  # when the metrics and flip counts were last brought up to date
        self._unpublished = False  # comparisons made since

    def _pair(self, served: ModelEntry, shadow: ModelEntry) -> _Pair:
        key = (served.name, served.version, shadow.version)
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _Pair(*key)
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
        for comparison, or count it dropped where the queue holds ``capacity`` requests or
        ``max_bytes`` of tensors already: never waits."""
        if self._closed:
            return
        queued = self._bytes_in - self._bytes_out
        if len(self._jobs) >= self.capacity or queued + tensor.nbytes > self.max_bytes:
            self._pair(served, shadow).dropped.inc(len(probs))
            return
        self._bytes_in += tensor.nbytes
        self._jobs.append((served, shadow, tensor, probs, winners))
        if self._thread is None:
            self._start()
        elif self._sleeping:
            self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError, TypeError):  # full (it is awake then), or closed
            os.write(self._wake[1], b"x")

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._wake = os.pipe()
                for fd in self._wake:  # a poke never blocks, nor a read that finds none
                    os.set_blocking(fd, False)
                # A thread that holds the GIL keeps it until the switch interval runs out
                # (5 ms by default) when another wants it: the live thread, back from its
                # socket, would wait that long behind the shadow's Python code.
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
                self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking comparisons, drop the queued ones, and wait for a run in progress
        (a worker must not exit while the thread is inside onnxruntime)."""
        with self._lock:
            self._closed = True
            self._jobs.clear()
            thread, self._thread = self._thread, None
        if thread is not None:
            self._poke()
            thread.join(timeout)
            self._publish()  # what this worker compared outlives it
            for fd in self._wake:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _run(self) -> None:
        # Linux schedules each thread on its own: SCHED_IDLE runs the shadow on what live
        # requests leave over and, unlike nice 19, gives way at once when one wakes up
        # (a nice-19 thread may finish its slice first: a ~2 ms tail on every live
        # request behind it). onnxruntime's own pool threads, where
        # SERVING_INTRA_OP_THREADS is above 1, keep the normal policy.
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError):
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while self._work():
            pass

    def _take(self) -> list[tuple] | None:
        """Everything queued, once there is something (a moment's wait lets a batch gather);
        while idle, what was compared is published when it is due."""
        while not self._jobs:
            if self._closed:
                return None
            wait = 0.5
            if self._unpublished:
                wait = self._published + PUBLISH_EVERY_S - time.monotonic()
                if wait <= 0:
                    self._publish()
                    continue
            self._sleeping = True
            if not self._jobs:  # (a job appended before the flag was seen wakes it below)
                select.select([self._wake[0]], [], [], wait)
                with contextlib.suppress(OSError):
                    os.read(self._wake[0], 4096)
            self._sleeping = False
        if self._closed:
            return None
        self._busy = True
        if len(self._jobs) < GATHER:
            time.sleep(GATHER_S)
        jobs = []
        while self._jobs:
            job = self._jobs.popleft()
            self._bytes_out += job[2].nbytes
            jobs.append(job)
        return jobs

    def _work(self) -> bool:
        """One batch of everything queued (its locals, and the sessions they hold, go when
        it returns); False once closed."""
        jobs = self._take()
        if jobs is None:
            return False
        try:
            groups: dict[tuple, list] = defaultdict(list)
            for job in jobs:
                groups[(id(job[0]), id(job[1]))].append(job)
            for group in groups.values():
                try:
                    self.compare(group)
                except Exception:  # the shadow must never take the worker down
                    self._pair(group[0][0], group[0][1]).pending.failed += sum(
                        len(j[3]) for j in group
                    )
                    log.exception("shadow comparison failed")
            self._unpublished = True
            if time.monotonic() - self._published >= PUBLISH_EVERY_S:
                self._publish()
        finally:
            self._busy = False
        return True

    def _publish(self) -> None:
        self._published, self._unpublished = time.monotonic(), False
        for pair in list(self._pairs.values()):
            pair.publish()
        self._save_flips()

    def compare(self, jobs: list) -> None:
        """Run one pair's queued batches as one call on the shadow and note the outcome."""
        served, shadow = jobs[0][0], jobs[0][1]
        tensor, p, won = (
            (np.concatenate([job[i] for job in jobs]) for i in (2, 3, 4))
            if len(jobs) > 1
            else jobs[0][2:]
        )
        pair = self._pair(served, shadow)
        pair.meters, pending = shadow.meters, pair.pending
        outputs = shadow.predictor.predict(tensor, pending.runs)
        q = shadow.output.probabilities(outputs)
        shadow_won = shadow.output.indices(outputs)
        rows = np.arange(len(p))
        kl = np.sum(p * (np.log(np.maximum(p, _TINY)) - np.log(np.maximum(q, _TINY))), axis=1)
        agreed = won == shadow_won
        agreements = int(agreed.sum())
        pending.agree += agreements
        pending.disagree += len(p) - agreements
        pending.deltas.append(np.abs(p[rows, won] - q[rows, won]))
        pending.kls.append(np.maximum(kl, 0.0))
        classes, shadow_classes = served.metadata["classes"], shadow.metadata["classes"]
        for i in np.flatnonzero(~agreed).tolist():
            pending.flips[(classes[won[i]], shadow_classes[shadow_won[i]])] += 1

    def _save_flips(self) -> None:
        """This worker's exact flip counts, for /models to add up over the workers."""
        folder = metrics.multiprocess_dir()
        if not folder:
            return
        path = Path(folder, f"{FLIPS_FILE}{os.getpid()}.json")
        if not self._flips_loaded:  # a worker with a dead one's pid carries on its counts
            self._flips_loaded = True
            for key, pairs in _read_flips(path).items():
                _FLIPS[key].update(pairs)
        data = {k: [[a, b, n] for (a, b), n in pairs.items()] for k, pairs in _FLIPS.items()}
        temporary = path.with_name(f".{path.name}")
        with contextlib.suppress(OSError):  # a full disk costs the flip table, not the worker
            temporary.write_text(json.dumps(data))
            os.replace(temporary, path)

    def idle(self, timeout: float = 5.0) -> bool:
        """Whether every queued comparison was made (and published) within ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while self._jobs or self._busy or self._unpublished:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


def _read_flips(path: Path) -> dict[str, Counter]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: Counter({(a, b): n for a, b, n in rows}) for k, rows in data.items()}


def _all_flips() -> dict[str, Counter]:
    """Every worker's exact flip counts, summed (this process's without a multiprocess
    folder)."""
    folder = metrics.multiprocess_dir()
    if not folder:
        return _FLIPS
    total: dict[str, Counter] = defaultdict(Counter)
    for path in Path(folder).glob(f"{FLIPS_FILE}*.json"):
        for key, pairs in _read_flips(path).items():
            total[key].update(pairs)
    return total


_SUMMED = {
    "shadow_comparisons_total": "comparisons",
    "shadow_dropped_total": "dropped",
    "shadow_failures_total": "failed",
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
                    ("agreements", "disagreements", "dropped", "failed", "delta_sum", "kl_sum"),
                    0.0,
                )
            field = _SUMMED.get(sample.name)
            if field == "comparisons":
                pair["agreements" if labels["outcome"] == "agree" else "disagreements"] += (
                    sample.value
                )
            elif field:
                pair[field] += sample.value
    flips = _all_flips()
    found: dict[str, list[dict]] = defaultdict(list)
    for (name, served, shadow), pair in sorted(pairs.items()):
        pair["flips"] = flips.get(_key(name, served, shadow), Counter())
        found[name].append(_summary(served, shadow, pair))
    return found


def _summary(served: int, shadow: int, pair: dict) -> dict:
    agreements, disagreements = int(pair["agreements"]), int(pair["disagreements"])
    n = agreements + disagreements
    ranked = sorted(pair["flips"].items(), key=lambda item: (-item[1], item[0]))
    return {
        "version": served,
        "shadow_version": shadow,
        "comparisons": n,
        "agreements": agreements,
        "agreement_rate": round(agreements / n, 6) if n else None,
        "mean_abs_delta": round(pair["delta_sum"] / n, 6) if n else None,
        "mean_kl": round(pair["kl_sum"] / n, 6) if n else None,
        "dropped": int(pair["dropped"]),
        "failed": int(pair["failed"]),
        "flips": [
            {"served": a, "shadow": b, "count": int(count)}
            for (a, b), count in ranked[:FLIP_SERIES]
        ],
        "other_flips": int(sum(count for _, count in ranked[FLIP_SERIES:])),
    }
