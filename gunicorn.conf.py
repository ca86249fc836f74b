"""gunicorn configuration: every value comes from service.settings (SERVING_* variables).

    gunicorn -c gunicorn.conf.py        # what scripts/serve.sh and the Dockerfile run

Prometheus multiprocess mode: this file runs in the master before any worker exists, so it
empties the metrics folder and exports PROMETHEUS_MULTIPROC_DIR for the workers to inherit;
child_exit marks dead workers so their live gauges disappear.
"""

import os
import shutil

from gunicorn.glogging import Logger

from service.settings import Settings

_settings = Settings.from_env()

_metrics_dir = _settings.metrics_dir
if _metrics_dir.exists():
    shutil.rmtree(_metrics_dir)  # stale files from an earlier run would be summed in
_metrics_dir.mkdir(parents=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

wsgi_app = "service.app:create_app()"  # a factory call: sessions are built in each worker
bind = _settings.bind
workers = _settings.workers
worker_class = "gthread"
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
