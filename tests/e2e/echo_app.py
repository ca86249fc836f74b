"""A WSGI app that says what it was sent: stock gunicorn serves it in tests/e2e/test_door.py,
so the service's framing decisions can be compared with gunicorn's own on the same bytes."""

from __future__ import annotations

import json


def app(environ, start_response):
    """200 with the method, path and body length gunicorn handed over."""
    body = environ["wsgi.input"].read()
    answer = json.dumps(
        {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "body": len(body)}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [answer]
