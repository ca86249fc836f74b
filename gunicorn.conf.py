"""gunicorn configuration: every value comes from service.settings (SERVING_* variables).

    gunicorn -c gunicorn.conf.py        # what scripts/serve.sh and the Dockerfile run

Prometheus multiprocess mode: this file runs in the master before any worker exists, so it
exports PROMETHEUS_MULTIPROC_DIR for the workers to inherit, and on_starting empties that
folder (once per master: a HUP reload keeps the metrics and the model-control record the
workers share); child_exit marks dead workers so their live gauges disappear.
"""

import os
import shutil

from gunicorn.glogging import Logger

from service import keys
from service.settings import Settings

_settings = Settings.from_env()
if _settings.api_keys_file:  # fail fast here; a worker never refuses to start over it
    _problem = keys.problem_with(_settings.api_keys_file)
    if _problem:
        raise SystemExit(f"SERVING_API_KEYS_FILE: {_problem}")

_metrics_dir = _settings.metrics_dir
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


def on_starting(server):
    """The master starts (not a reload: a HUP keeps the metrics and the model-control
    record): empty the runtime folder, whose stale files would be summed in."""
    if _metrics_dir.exists():
        shutil.rmtree(_metrics_dir)
    _metrics_dir.mkdir(parents=True)


wsgi_app = "service.app:create_app()"  # a factory call: sessions are built in each worker
bind = _settings.bind
workers = _settings.workers
worker_class = "service.worker.ServingWorker"  # gthread, reading whole requests first
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
    for dynamic batching."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("serving")
    if state is not None:
        state.lifecycle.stop()
        state.registry.close()


def child_exit(server, worker):
    """A worker died or was replaced: drop its live gauges from the multiprocess files."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
