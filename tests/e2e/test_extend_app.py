"""docs/examples/extend_app.py under a real gunicorn, started as the docs say
(``gunicorn -c gunicorn.conf.py --pythonpath docs/examples 'extend_app:create()'``): its route
and blueprint answer, the route table's routes answer as without it, unknown paths are still
the service's JSON 404."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import call, running_server

APP = ("--pythonpath", "docs/examples", "extend_app:create()")
CIRCLES = json.dumps({"instances": [[0.0, 0.05], [0.99, 0.1]]}).encode()


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("extended"), gunicorn_args=APP) as running:
        yield running


def test_the_examples_routes_answer_under_gunicorn(extended):
    status, headers, body = call("GET", extended.url + "/hello", headers={"X-Request-ID": "e2e-1"})
    assert (status, body) == (200, {"hello": "from your route", "request_id": "e2e-1"})
    assert headers["X-Request-ID"] == "e2e-1"
    status, headers, body = call("GET", extended.url + "/extras/classes/circles")
    assert (status, body) == (
        200,
        {"model": "circles", "version": 1, "classes": ["outer", "inner"]},
    )
    assert re.fullmatch(r"extras;dur=\d+\.\d{3}", headers["Server-Timing"])
    status, _, body = call("GET", extended.url + "/extras/classes/nope")
    assert (status, body["error"]["code"]) == (404, "model_not_found")


def test_the_route_table_answers_as_without_the_extension(extended, server):
    ours = call("POST", extended.url + "/predict?model=circles", CIRCLES, "application/json")
    theirs = call("POST", server + "/predict?model=circles", CIRCLES, "application/json")
    assert ours[0] == theirs[0] == 200
    assert ours[2].pop("request_id") != theirs[2].pop("request_id")
    assert ours[2] == theirs[2]
    assert [p["label"] for p in ours[2]["predictions"]] == ["inner", "outer"]
    status, headers, _ = call("GET", extended.url + "/predict")
    assert (status, headers["Allow"]) == (405, "POST")


def test_unknown_paths_are_still_json_404s(extended):
    status, headers, body = call(
        "GET", extended.url + "/nowhere", headers={"X-Request-ID": "e-404"}
    )
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "error": {"code": "not_found", "message": "no route for GET /nowhere; see /docs"},
        "request_id": "e-404",
    }
    status, _, body = call("GET", extended.url + "/v2/nowhere")
    assert (status, body) == (404, {"error": "no route for GET /v2/nowhere; see /docs"})


def test_the_examples_requests_are_in_the_access_log(extended):
    call("GET", extended.url + "/extras/classes/blobs", headers={"X-Request-ID": "e2e-log"})
    lines = [line for line in extended.log_lines() if line.get("request_id") == "e2e-log"]
    assert [(line["logger"], line["endpoint"], line["status"]) for line in lines] == [
        ("service.access", "/extras/classes/<name>", 200)
    ]
