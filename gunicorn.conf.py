"""gunicorn configuration: every value comes from service.settings (SERVING_* variables).

    gunicorn -c gunicorn.conf.py        # what scripts/serve.sh and the Dockerfile run

Prometheus multiprocess mode: this file runs in the master before any worker exists, so it
exports PROMETHEUS_MULTIPROC_DIR (the instance's runtime folder, service.instance) for the
workers to inherit; on_starting claims and empties it once per master (a HUP reload keeps
the metrics and the model-control record); child_exit marks dead workers so their live
gauges disappear.
"""

import os

from gunicorn.glogging import Logger

from service import instance, keys
from service.settings import Settings

_settings = Settings.from_env()
if _settings.api_keys_file:  # fail fast here; a worker never refuses to start over it
    _problem = keys.problem_with(_settings.api_keys_file)
    if _problem:
        raise SystemExit(f"SERVING_API_KEYS_FILE: {_problem}")

# The instance's runtime folder: Prometheus' multiprocess files and the model-control
# record its workers share. Given, or one of its own (kept across a HUP reload, which runs
# this file again in the same master; removed when the master exits).
_runtime = instance.RuntimeFolder.for_instance(_settings.metrics_dir)
# A folder that cannot be written (or has no room) costs the metrics, never the predictions:
# the workers then count in-process, /metrics answers 503 and readiness says why.
_problem = _runtime.problem()
if _problem:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ["KERAS_SERVING_METRICS_UNAVAILABLE"] = f"the metrics folder {_problem}"
else:
    os.environ.pop("KERAS_SERVING_METRICS_UNAVAILABLE", None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_runtime.path)


def on_starting(server):
    """The master starts (not a reload: a HUP keeps the metrics and the model-control
    record): claim the folder (refused when another live instance holds it), empty it."""
    if _problem:
        server.log.error("metrics unavailable: the metrics folder %s %s", _runtime.path, _problem)
    else:
        _runtime.claim()


def on_exit(server):
    """The master stops: release the folder (and remove it, when it was our own)."""
    _runtime.release()


wsgi_app = "service.app:create_app()"  # a factory call: sessions are built in each worker
bind = _settings.bind
workers = _settings.workers
worker_class = "service.http.worker.ServingWorker"  # gthread, reading whole requests first
threads = _settings.threads
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
preload_app = False  # onnxruntime sessions must not be shared across fork()
proc_name = "keras-classifier-serving"
control_socket_disable = True


# No access log: the service writes one JSON line per request itself (service.access).
class NoAccessLogger(Logger):
    """gunicorn's logger minus the access line (it would be formatted per request even
    when discarded, because logconfig_dict is set)."""

    def access(self, resp, req, environ, request_time):
        return None


logger_class = NoAccessLogger
accesslog = None
loglevel = _settings.log_level.lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"level": _settings.log_level, "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {
            "level": _settings.log_level,
            "handlers": ["stderr"],
            "propagate": False,
        },
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
}


def worker_exit(server, worker):
    """A worker is stopping: stop watching the repository, answer whatever is still queued
    for dynamic batching, let the shadow thread finish its run (queued comparisons are
    dropped)."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("serving")
    if state is not None:
        state.lifecycle.stop()
        state.registry.close()
        state.dataplane.shadow.close()


def child_exit(server, worker):
    """A worker died or was replaced: drop its live gauges from the multiprocess files."""
    from service import metrics

    metrics.mark_process_dead(worker.pid)
