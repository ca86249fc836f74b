"""Every Prometheus metric the service exports, and the /metrics exposition.

Under gunicorn, ``gunicorn.conf.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at an emptied
folder before the workers start; prometheus-client then keeps each worker's values in
mmaped files there, and each scrape builds a fresh registry with ``MultiProcessCollector``
so counts add up exactly across workers. Without that variable (tests, ``flask run``) the
process's own registry is exposed.

Labels are bounded: model, version, endpoint (the URL rule, not the path), method, status,
error kind, and the predicted label (class names are fixed per model).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import mmap_dict as _mmap_dict
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch
UNAVAILABLE_ENV = "KERAS_SERVING_METRICS_UNAVAILABLE"  # set by gunicorn.conf.py: why not

log = logging.getLogger(__name__)

# --- metrics storage that fails soft ---------------------------------------------------------
# In multiprocess mode each value lives in an mmaped file. prometheus-client grows those files
# with truncate(), which leaves holes: on a full disk the first write into a hole kills the
# worker with SIGBUS. Here growth reserves the space first (posix_fallocate), so a full disk
# is an OSError when a new labelled value is created, and that falls back to an in-process
# value: predictions go on, and /metrics says the numbers are unavailable.

_state: dict[str, str | None] = {"unavailable": None}  # this process's own trouble


class _Reserved(io.FileIO):
    """A metrics file whose growth is allocated on disk before it is mapped."""

    def truncate(self, size=None):
        if size is not None and size > os.fstat(self.fileno()).st_size:
            os.posix_fallocate(self.fileno(), 0, size)
        return super().truncate(size)


def _open(file, mode="r", *args, **kwargs):
    if mode == "a+b":  # how MmapedDict opens a file to write
        return _Reserved(file, "a+")
    return open(file, mode, *args, **kwargs)


def _fail_soft(value_class):
    def make(*args, **kwargs):
        # The environment is read now, not at import: gunicorn's master imports this module
        # once, and a HUP may since have found the folder broken (or fixed).
        if unavailable() is None and os.environ.get(MULTIPROC_ENV):
            try:
                return value_class(*args, **kwargs)
            except Exception as exc:  # a full disk, a folder gone: all alike
                mark_unavailable(f"the metrics folder cannot be written ({exc})")
        return _values.MutexValue(*args, **kwargs)

    return make


_mmap_dict.open = _open
_values.ValueClass = _fail_soft(_values.ValueClass)


_MARKER = ".metrics-unavailable"  # in the multiprocess folder: every worker's sums are off


def mark_unavailable(reason: str) -> None:
    """From now on the metrics are incomplete: say so once, here and (best effort, the
    folder may be full) to the other workers."""
    if _state["unavailable"] is None:
        _state["unavailable"] = reason
        log.error("metrics unavailable: %s; predictions continue", reason)
        folder = multiprocess_dir()
        if folder:
            with contextlib.suppress(OSError):
                Path(folder, _MARKER).write_text(reason)


def unavailable() -> str | None:
    """Why the metrics cannot be trusted (None: they can): this process's trouble, another
    worker's, or what gunicorn.conf.py found when the instance (re)started."""
    if _state["unavailable"] or os.environ.get(UNAVAILABLE_ENV):
        return _state["unavailable"] or os.environ.get(UNAVAILABLE_ENV)
    folder = multiprocess_dir()
    if folder and os.path.exists(os.path.join(folder, _MARKER)):
        return "another worker could not write the metrics folder"
    return None


# generate_latest writes the classic text format; say so (every Prometheus version reads it).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Tens of microseconds (a 2-feature MLP) to seconds (a big image batch under load).
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by endpoint (URL rule), method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request reaching the dispatcher to its response being ready to send.",
    ["endpoint", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "Requests being handled now, summed over live workers.",
    ["endpoint", "method"],
    multiprocess_mode="livesum",
)
INFERENCE_DURATION = Histogram(
    "inference_duration_seconds",
    "onnxruntime session.run time alone, per call (a call is one request's batch).",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
PREPROCESSING_DURATION = Histogram(
    "preprocessing_duration_seconds",
    "Request body to input tensor: parsing, validation, image decoding, resizing.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
IMAGE_DECODE_DURATION = Histogram(
    "image_decode_duration_seconds",
    "A request's images, bytes to pixels: decoding (a JPEG's draft included), orientation, "
    "colours; part of preprocessing_duration_seconds.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
IMAGE_RESIZE_DURATION = Histogram(
    "image_resize_duration_seconds",
    "A request's images, pixels to the model's size: the resize (and framing); part of "
    "preprocessing_duration_seconds.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
POSTPROCESSING_DURATION = Histogram(
    "postprocessing_duration_seconds",
    "Logits to probabilities, labels and the class distribution metrics.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
MODEL_REQUESTS = Histogram(
    "model_request_duration_seconds",
    "Inference requests that reached a model, by outcome (success or fail), from the "
    "start of decoding to the result: the V2 statistics' success and fail.",
    ["model", "version", "outcome"],
    buckets=LATENCY_BUCKETS,
)
LAST_INFERENCE = Gauge(
    "model_last_inference_timestamp_seconds",
    "Unix time of the model version's last successful inference (latest of all workers).",
    ["model", "version"],
    multiprocess_mode="max",
)
PREDICTIONS = Counter(
    "predictions_total",
    "Instances predicted, by predicted label: the class distribution.",
    ["model", "version", "label"],
)
CONFIDENCE = Histogram(
    "prediction_confidence",
    "Probability of the winning class, per instance.",
    ["model", "version"],
    buckets=CONFIDENCE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "batch_size",
    "Instances per onnxruntime call.",
    ["model", "version"],
    buckets=BATCH_BUCKETS,
)
BATCH_QUEUE_DURATION = Histogram(
    "batch_queue_duration_seconds",
    "Time a request waited in the dynamic-batching queue before its onnxruntime call.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    "errors_total",
    "Error responses by kind (validation, not_found, payload_too_large, unsupported_media, "
    "bad_request, method_not_allowed, unavailable, inference, internal) and code.",
    ["kind", "code"],
)
MODEL_LOADED = Gauge(
    "model_loaded",
    "1 when the model version is loaded and servable in every live worker, else 0.",
    ["model", "version"],
    multiprocess_mode="livemin",
)
MODEL_LOAD_DURATION = Gauge(
    "model_load_duration_seconds",
    "Time to validate, checksum, create and warm up the session (slowest live worker).",
    ["model", "version"],
    multiprocess_mode="livemax",
)
MODEL_PROVIDER = Gauge(
    "model_execution_provider",
    "1 for the onnxruntime execution provider the model version runs on.",
    ["model", "version", "provider"],
    multiprocess_mode="livemax",
)

MODEL_LOAD_FAILURES = Counter(
    "model_load_failures_total",
    "Model version loads that failed (validation, checksum, session creation, warm-up).",
    ["model", "version"],
)
MODEL_CONFIG_ERRORS = Counter(
    "model_config_errors_total",
    "serving.json files that could not be used (the rules in force stay).",
    ["model"],
)
MODEL_WEIGHT = Gauge(
    "model_version_weight",
    "Share of a model's unversioned requests sent to the version (serving.json weights).",
    ["model", "version"],
    multiprocess_mode="livemax",
)
MODEL_ROLE = Gauge(
    "model_version_role",
    "1 for the role of each version the rules want served: serving (answers requests that "
    "name no version, or any version under new_versions serve), candidate (held: only "
    "requests that name it) or shadow (also runs a share of the serving version's inputs).",
    ["model", "version", "role"],
    multiprocess_mode="livemax",
)
MODEL_ALERT_THRESHOLD = Gauge(
    "model_alert_threshold",
    'Alert thresholds from a model\'s serving.json "alerts" (alert: p99_latency_s or '
    "shadow_disagreement), for the shipped alert rules.",
    ["model", "alert"],
    multiprocess_mode="livemax",
)
SHADOW_COMPARISONS = Counter(
    "shadow_comparisons_total",
    "Instances answered by a serving version and also run on the shadow version, by whether "
    "the two agree on the top-1 class.",
    ["model", "version", "shadow_version", "outcome"],
)
SHADOW_DELTA = Histogram(
    "shadow_probability_delta",
    "|p_served - p_shadow| of the served class, per compared instance.",
    ["model", "version", "shadow_version"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
)
SHADOW_KL = Histogram(
    "shadow_kl_divergence",
    "KL(served || shadow) of the class probabilities in nats, per compared instance.",
    ["model", "version", "shadow_version"],
    buckets=(0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
SHADOW_FLIPS = Counter(
    "shadow_label_flips_total",
    "Compared instances whose top-1 class differs, by served and shadow label (the first "
    "20 pairs a worker sees; later pairs count as other -> other).",
    ["model", "version", "shadow_version", "served_label", "shadow_label"],
)
SHADOW_DROPPED = Counter(
    "shadow_dropped_total",
    "Instances not compared because the shadow queue was full (the live answer never waits).",
    ["model", "version", "shadow_version"],
)
SHADOW_FAILURES = Counter(
    "shadow_failures_total",
    "Instances whose shadow run failed (the shadow version raised): not compared.",
    ["model", "version", "shadow_version"],
)
KEY_REQUESTS = Counter(
    "api_key_requests_total",
    "Requests by API key id (never the key), endpoint and status; key_id is 'none' for a "
    "request without a valid key.",
    ["key_id", "endpoint", "status"],
)

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))

_ERROR_KINDS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media",
    422: "validation",
    503: "unavailable",
}


_children: dict[tuple, object] = {}


def child(metric, *labels: str):
    """``metric.labels(*labels)``, memoized: the lookup and its lock cost more than the update."""
    key = (id(metric), *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def method_label(method: str) -> str:
    """The HTTP method as a label: any method outside the standard few is ``other``."""
    return method if method in _METHODS else "other"


def error_kind(status: int, code: str) -> str:
    """The low-cardinality kind of an error response."""
    if code in ("inference_error", "inference_timeout"):
        return "inference"
    return _ERROR_KINDS.get(status, "internal" if status >= 500 else "other")


def observe_many(histogram, values: np.ndarray) -> None:
    """Observe every value of an array at once: one increment per bucket touched, not one
    per value (the same counts and sum as observing each; prometheus-client has no batch
    observe, so this uses the child's bucket values as ``observe`` itself does)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if not len(values):
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    if bounds is None or len(values) <= 8:  # (few: one at a time is quicker)
        for value in values.tolist():
            histogram.observe(value)
        return
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for i in np.flatnonzero(counts).tolist():
        histogram._buckets[i].inc(int(counts[i]))


def record_rules(
    name: str, roles: dict[int, str], old_roles: dict[int, str], alerts: dict[str, float]
) -> None:
    """Publish a model's version roles and alert thresholds (a role a version left is 0;
    /metrics shows only what the current rules say, see :func:`exposition`)."""
    for version, role in old_roles.items():
        if roles.get(version) != role:
            MODEL_ROLE.labels(name, str(version), role).set(0)
    for version, role in roles.items():
        MODEL_ROLE.labels(name, str(version), role).set(1)
    for alert, threshold in alerts.items():
        MODEL_ALERT_THRESHOLD.labels(name, alert).set(threshold)


def record_model(name: str, version: int, loaded: bool, seconds: float, provider: str | None):
    """Publish a model version's load outcome."""
    labels = (name, str(version))
    MODEL_LOADED.labels(*labels).set(1 if loaded else 0)
    MODEL_LOAD_DURATION.labels(*labels).set(seconds)
    if provider:
        MODEL_PROVIDER.labels(*labels, provider).set(1)


class ModelMeters:
    """One model version's metric children, looked up once at load: per request, the
    look-ups would cost more than the updates."""

    __slots__ = (
        "_images",
        "_labels",
        "_predictions",
        "batch_size",
        "confidence",
        "fail",
        "inference",
        "last_inference",
        "postprocessing",
        "preprocessing",
        "success",
    )

    def __init__(self, name: str, version: int) -> None:
        labels = self._labels = (name, str(version))
        self.preprocessing = PREPROCESSING_DURATION.labels(*labels)
        self.postprocessing = POSTPROCESSING_DURATION.labels(*labels)
        self.inference = INFERENCE_DURATION.labels(*labels)
        self.batch_size = BATCH_SIZE.labels(*labels)
        self.confidence = CONFIDENCE.labels(*labels)
        self.success = MODEL_REQUESTS.labels(*labels, "success")
        self.fail = MODEL_REQUESTS.labels(*labels, "fail")
        self.last_inference = LAST_INFERENCE.labels(*labels)
        self._predictions: dict[str, Any] = {}
        self._images: tuple[Any, Any] | None = None  # made on a model's first image

    def images(self, decode_s: float, resize_s: float) -> None:
        """One request's image decoding and resizing times."""
        if self._images is None:
            labels = self._labels
            self._images = (
                IMAGE_DECODE_DURATION.labels(*labels),
                IMAGE_RESIZE_DURATION.labels(*labels),
            )
        self._images[0].observe(decode_s)
        self._images[1].observe(resize_s)

    def predicted(self, labels: list[str], confidences: list[float]) -> None:
        """Class distribution and confidence of one request's instances."""
        counts = {labels[0]: 1} if len(labels) == 1 else collections.Counter(labels)
        for label, count in counts.items():
            counter = self._predictions.get(label)
            if counter is None:
                counter = self._predictions[label] = PREDICTIONS.labels(*self._labels, label)
            counter.inc(count)
        if len(confidences) > 4:
            observe_many(self.confidence, confidences)
        else:
            for confidence in confidences:
                self.confidence.observe(confidence)


def multiprocess_dir() -> str | None:
    """The multiprocess folder, when gunicorn's config set one."""
    return os.environ.get(MULTIPROC_ENV) or None


def current_registry() -> CollectorRegistry:
    """All workers' values (a fresh multiprocess registry), or this process's own."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


class _Kept:
    """A registry's families with only the samples ``keep(labels)`` accepts."""

    def __init__(self, registry: CollectorRegistry, keep: Callable[[dict[str, str]], bool]):
        self.registry, self.keep = registry, keep

    def collect(self):
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if self.keep(s.labels)]
            yield family


def exposition(keep: Callable[[dict[str, str]], bool] | None = None) -> tuple[bytes, str]:
    """The text format for a scrape: all workers' values in multiprocess mode; with
    ``keep``, only the series it accepts (the versions the repository serves now: a
    retired version's series leave with it, whichever worker counted them)."""
    registry = current_registry()
    return generate_latest(_Kept(registry, keep) if keep else registry), CONTENT_TYPE


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit hook: drop a dead worker's live gauges (never raises: the
    master must outlive any trouble with the metrics folder)."""
    if multiprocess_dir():
        try:
            _multiprocess.mark_process_dead(pid)
        except OSError as exc:
            log.error("metrics of dead worker %d not cleared: %s", pid, exc)
