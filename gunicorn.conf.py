"""gunicorn configuration: every value comes from service.settings (SERVING_* variables).

gunicorn -c gunicorn.conf.py        # what scripts/serve.sh and the Dockerfile run
"""

from service.settings import Settings

_settings = Settings.from_env()

wsgi_app = "service.app:create_app()"  # a factory call: sessions are built in each worker
bind = _settings.bind
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
loglevel = _settings.log_level.lower()
preload_app = False  # onnxruntime sessions must not be shared across fork()
accesslog = None
errorlog = "-"
proc_name = "keras-classifier-serving"
