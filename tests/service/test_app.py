"""service.app: create_app() is a Flask app whose own features work where the route table does
not answer: a user's routes, blueprints, hooks and error handlers (docs/examples/extend_app.py),
with the service's request ids, metrics, access log and JSON errors around them."""

from __future__ import annotations

import importlib.util
import logging
import re

import pytest

from service import metrics
from service.app import create_app
from service.keys import digest
from tests.helpers import ROOT

CIRCLES = {"instances": [[0.0, 0.05], [0.99, 0.1]]}
READ_KEY = "ksk_read-key-for-extras"


def _example():
    """docs/examples/extend_app.py, imported as a user's module is."""
    path = ROOT / "docs" / "examples" / "extend_app.py"
    spec = importlib.util.spec_from_file_location("extend_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extended(settings):
    """The example's app, plus app-wide hooks that record which paths Flask handled."""
    app = _example().create(settings, poll_interval_s=0)
    app.hooks = []

    @app.before_request
    def before():
        from flask import request

        app.hooks.append(("before", request.path))

    @app.after_request
    def after(response):
        from flask import request

        app.hooks.append(("after", request.path))
        return response

    return app


@pytest.fixture
def user(extended):
    extended.hooks.clear()
    return extended.test_client()


def _counted(endpoint: str, method: str, status: str) -> float:
    return metrics.HTTP_REQUESTS.labels(endpoint, method, status)._value.get()


def test_the_example_adds_a_route_and_a_blueprint_with_its_hooks(user):
    r = user.get("/hello", headers={"X-Request-ID": "hello-1"})
    assert r.status_code == 200
    assert r.get_json() == {"hello": "from your route", "request_id": "hello-1"}
    assert r.headers["X-Request-ID"] == "hello-1"
    assert "Server-Timing" not in r.headers  # the blueprint's after_request is its own
    r = user.get("/extras/classes/circles")
    assert r.status_code == 200
    assert r.get_json() == {"model": "circles", "version": 1, "classes": ["outer", "inner"]}
    assert re.fullmatch(r"extras;dur=\d+\.\d{3}", r.headers["Server-Timing"])
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
    assert user.application.hooks == [
        ("before", "/hello"),
        ("after", "/hello"),
        ("before", "/extras/classes/circles"),
        ("after", "/extras/classes/circles"),
    ]


def test_a_service_error_raised_in_a_user_route_is_the_services_json(user):
    r = user.get("/extras/classes/nope", headers={"X-Request-ID": "nope-1"})
    assert r.status_code == 404
    body = r.get_json()
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["message"] == "model 'nope' not found"
    assert "circles" in body["error"]["details"]["available"]
    assert body["request_id"] == "nope-1"
    assert "extras;dur=" in r.headers["Server-Timing"]  # after_request ran on the error too


def test_route_table_routes_are_unchanged_and_never_reach_flask(user, client):
    plain = client.post("/predict?model=circles", json=CIRCLES)
    r = user.post("/predict?model=circles", json=CIRCLES)
    assert r.status_code == plain.status_code == 200
    ours, theirs = r.get_json(), plain.get_json()
    assert ours.pop("request_id") != theirs.pop("request_id")
    assert ours == theirs
    assert [p["label"] for p in ours["predictions"]] == ["inner", "outer"]
    assert user.get("/openapi.json").get_json() == client.get("/openapi.json").get_json()
    assert user.get("/v2/models/circles").get_json() == client.get("/v2/models/circles").get_json()
    assert user.application.hooks == []  # Flask's hooks never ran: no Flask plumbing


def test_the_route_table_keeps_its_paths(settings):
    app = create_app(settings, poll_interval_s=0)

    @app.get("/predict")
    def shadow():
        return {"never": "answered"}

    r = app.test_client().get("/predict")
    assert r.status_code == 405  # the dispatcher's: /predict answers POST only
    assert r.headers["Allow"] == "POST"
    assert r.get_json()["error"]["details"] == {"allowed": ["POST"]}


def test_unknown_paths_and_methods_are_json_in_the_protocols_shape(user):
    r = user.get("/nowhere", headers={"X-Request-ID": "nowhere-1"})
    assert (r.status_code, r.content_type) == (404, "application/json")
    assert r.get_json() == {
        "error": {"code": "not_found", "message": "no route for GET /nowhere; see /docs"},
        "request_id": "nowhere-1",
    }
    assert r.headers["X-Request-ID"] == "nowhere-1"
    r = user.get("/v2/nowhere")
    assert (r.status_code, r.get_json()) == (
        404,
        {"error": "no route for GET /v2/nowhere; see /docs"},
    )
    r = user.get("/v1/models/circles/nowhere")
    assert r.status_code == 404
    assert r.get_json() == {"error": "no route for GET /v1/models/circles/nowhere; see /docs"}
    r = user.post("/hello")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert r.get_json()["error"] == {
        "code": "method_not_allowed",
        "message": "POST is not allowed on /hello",
        "details": {"allowed": ["GET", "HEAD", "OPTIONS"]},
    }
    assert "<html" not in r.get_data(as_text=True).lower()


def test_a_body_above_the_limit_on_a_user_route_is_a_json_413(settings):
    app = create_app(settings, max_body_bytes=1000, poll_interval_s=0)
    assert app.config["MAX_CONTENT_LENGTH"] == 1000

    @app.post("/echo")
    def echo():
        from flask import request

        return {"bytes": len(request.get_data())}

    client = app.test_client()
    assert client.post("/echo", data=b"x" * 1000).get_json() == {"bytes": 1000}
    r = client.post("/echo", data=b"x" * 1001, headers={"X-Request-ID": "big-1"})
    assert r.status_code == 413
    assert r.get_json() == {
        "error": {
            "code": "payload_too_large",
            "message": "the request body is above the limit of 1,000 bytes",
        },
        "request_id": "big-1",
    }


def test_user_routes_are_counted_and_logged_by_their_flask_rule(user, caplog):
    rule = "/extras/classes/<name>"
    ok, missing = _counted(rule, "GET", "200"), _counted(rule, "GET", "404")
    unmatched = _counted("unmatched", "GET", "404")
    in_progress = metrics.HTTP_IN_PROGRESS.labels("(app)", "GET")._value.get()
    with caplog.at_level(logging.INFO, logger="service.access"):
        assert (
            user.get("/extras/classes/circles", headers={"X-Request-ID": "c-1"}).status_code == 200
        )
        assert user.get("/extras/classes/nope").status_code == 404
        assert user.get("/extras/nowhere").status_code == 404
    assert _counted(rule, "GET", "200") == ok + 1
    assert _counted(rule, "GET", "404") == missing + 1
    assert _counted("unmatched", "GET", "404") == unmatched + 1
    assert metrics.HTTP_IN_PROGRESS.labels("(app)", "GET")._value.get() == in_progress
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 3
    first = lines[0]
    assert (first.request_id, first.endpoint, first.status, first.error) == ("c-1", rule, 200, None)
    assert [(r.path, r.endpoint, r.status, r.error) for r in lines[1:]] == [
        ("/extras/classes/nope", rule, 404, "model_not_found"),
        ("/extras/nowhere", "unmatched", 404, "not_found"),
    ]


def test_an_exception_in_a_user_route_is_a_json_500_logged_with_its_request_id(settings, caplog):
    app = create_app(settings, poll_interval_s=0)

    @app.get("/broken")
    def broken():
        raise KeyError("a bug")

    before = _counted("/broken", "GET", "500")
    with caplog.at_level(logging.ERROR, logger="service.app"):
        r = app.test_client().get("/broken", headers={"X-Request-ID": "bug-2"})
    assert r.status_code == 500
    assert r.get_json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the request id identifies it in the logs",
        },
        "request_id": "bug-2",
    }
    assert "KeyError" not in r.get_data(as_text=True)
    (record,) = [rec for rec in caplog.records if rec.exc_info]
    assert (record.request_id, record.exc_info[0]) == ("bug-2", KeyError)
    assert _counted("/broken", "GET", "500") == before + 1


def test_a_users_own_error_handler_wins(settings):
    app = create_app(settings, poll_interval_s=0)

    @app.errorhandler(404)
    def not_here(error):
        return {"mine": True}, 404

    r = app.test_client().get("/nowhere")
    assert (r.status_code, r.get_json()) == (404, {"mine": True})
    assert app.test_client().get("/models/nope").get_json()["error"]["code"] == "model_not_found"


def test_the_examples_blueprint_asks_for_the_services_api_keys(settings, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"dashboard:{digest(READ_KEY)}:read\n")
    client = _example().create(settings, api_keys_file=str(keys), poll_interval_s=0).test_client()
    r = client.get("/extras/classes/circles")
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="keras-classifier-serving"'
    r = client.get("/extras/classes/circles", headers={"X-API-Key": READ_KEY})
    assert r.get_json()["classes"] == ["outer", "inner"]
    assert client.get("/hello").status_code == 200  # a route that asks for no key


def test_the_docs_show_the_example_as_it_is():
    page = (ROOT / "docs" / "how-it-works.md").read_text()
    section = page[page.index("## Extending the app") :]
    shown = section[
        section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))
    ]
    source = (ROOT / "docs" / "examples" / "extend_app.py").read_text().splitlines()
    lines = [line for line in shown.splitlines() if line.strip()]
    assert len(lines) > 15
    missing = [line for line in lines if line not in source]
    assert missing == []
    assert "'extend_app:create()'" in section
    assert 'wsgi_app = "service.app:create_app()"' in (ROOT / "gunicorn.conf.py").read_text()
