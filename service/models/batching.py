"""Dynamic batching (Triton's idea, per gunicorn worker): requests for the same model that
arrive while it is busy become one onnxruntime call, split back per request.

Leader/follower, with no thread of its own: a request that finds the model idle becomes the
leader and runs at once, so a lone request pays nothing. Requests that arrive while a call
is in flight queue up; when the call ends, the first of them is promoted to leader and runs
everything queued (up to ``max_batch_size`` instances, optionally after waiting
``max_delay_us`` for more) as one call, handing each request exactly its own rows. If a
combined call fails, each request is retried alone, so one request's failure never reaches
another. Every queued request is eventually run by a leader, so the queue always drains.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service import metrics
from service.errors import ApiError, InferenceFailed, InferenceTimeout, ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """How one model's requests are combined."""

    enabled: bool = True
    max_batch_size: int = 32
    max_delay_us: int = 0
    timeout_s: float = 10.0


def config_for(base: BatchingConfig, overrides: Mapping[str, Mapping[str, Any]], model: str):
    """The base config with a model's overrides applied."""
    return replace(base, **overrides.get(model, {}))


class _Request:
    __slots__ = ("batch", "cancelled", "done", "enqueued", "error", "lead", "result", "wake")

    def __init__(self, batch: np.ndarray) -> None:
        self.batch = batch
        self.enqueued = time.perf_counter()
        # Set when answered or promoted to leader; made only for a request that has to wait
        # (under the lock, before anyone could set it): a lone request needs none.
        self.wake: threading.Event | None = None
        self.done = False
        self.lead = False
        self.cancelled = False
        self.result: np.ndarray | None = None
        self.error: ApiError | None = None


class DynamicBatcher:
    """One model version's queue; the requests themselves take turns running batches."""

    def __init__(
        self,
        name: str,
        version: int,
        run: Callable[[np.ndarray], np.ndarray],
        config: BatchingConfig,
    ) -> None:
        self.name, self.version, self.config = name, version, config
        self._run = run
        self._queue: deque[_Request] = deque()
        self._queued_instances = 0
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._labels = (name, str(version))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """This request's logits, computed together with whatever else is queued."""
        request = _Request(batch)
        with self._cond:
            if self._closed:
                raise ServiceUnavailable("the worker is shutting down")
            self._queue.append(request)
            self._queued_instances += batch.shape[0]
            if not self._busy:
                self._busy = request.lead = True
            else:
                request.wake = threading.Event()
            self._cond.notify_all()
        if not request.lead:
            self._wait_turn(request)
        if request.lead:
            self._lead()
        if request.error is not None:
            raise request.error
        return request.result

    def _wait_turn(self, request: _Request) -> None:
        if request.wake.wait(self.config.timeout_s):
            return
        with self._cond:
            if request.done or request.lead:
                return
            request.cancelled = True  # a leader will skip it
        raise InferenceTimeout(
            f"model {self.name!r} did not answer within {self.config.timeout_s:g} s"
        )

    def _lead(self) -> None:
        """Run one batch (this request is the oldest queued, so it is in it), then pass on."""
        delay = self.config.max_delay_us / 1e6
        with self._cond:
            if delay:
                deadline = self._queue[0].enqueued + delay
                while self._queued_instances < self.config.max_batch_size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken = self._take()
        self._execute(taken)
        with self._cond:
            while self._queue and self._queue[0].cancelled:  # gave up waiting: skip them
                self._queued_instances -= self._queue.popleft().batch.shape[0]
            if self._queue:
                successor = self._queue[0]  # the oldest waiting request leads next
                successor.lead = True
                successor.wake.set()
            else:
                self._busy = False
                self._cond.notify_all()

    def _take(self) -> list[_Request]:
        """Oldest requests up to max_batch_size instances (always at least one)."""
        taken, size = [], 0
        while self._queue:
            n = self._queue[0].batch.shape[0]
            if taken and size + n > self.config.max_batch_size:
                break
            request = self._queue.popleft()
            self._queued_instances -= n
            if not request.cancelled:
                taken.append(request)
                size += n
        return taken

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new requests and wait until everything queued has been answered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            while (self._busy or self._queue) and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())

    def _execute(self, requests: list[_Request]) -> None:
        if not requests:
            return
        now = time.perf_counter()
        queue_time = metrics.child(metrics.BATCH_QUEUE_DURATION, *self._labels)
        for request in requests:
            queue_time.observe(now - request.enqueued)
        self._answer(requests)

    def _answer(self, requests: list[_Request]) -> None:
        try:
            if len(requests) == 1:
                requests[0].result = self._run(requests[0].batch)
            else:
                logits = self._run(np.concatenate([r.batch for r in requests]))
                offsets = np.cumsum([0] + [r.batch.shape[0] for r in requests])
                for request, start, end in zip(requests, offsets, offsets[1:], strict=False):
                    request.result = logits[start:end]
        except Exception:
            if len(requests) > 1:  # find the culprit: every request on its own
                log.warning(
                    "combined batch for %s v%d failed; retrying each request alone",
                    self.name,
                    self.version,
                )
                for request in requests:
                    self._answer([request])
                return
            log.exception("inference failed for %s v%d", self.name, self.version)
            requests[0].error = InferenceFailed(f"inference failed in model {self.name!r}")
        for request in requests:
            request.done = True
            if request.wake is not None:
                request.wake.set()
