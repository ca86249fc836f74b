"""service.fastpath answers the predict routes exactly as the Flask views do, and only those."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest
from werkzeug.test import Client

from service import fastpath
from service.app import create_app
from tests.helpers import image_bytes

CIRCLES = {"instances": [[0.0, 0.05], [0.99, 0.1]]}


def _cases(fashion):
    png = image_bytes(fashion["images"][0])
    b64 = base64.b64encode(png).decode()
    json_type = "application/json"
    return [
        ("/predict?model=circles", json_type, CIRCLES),
        ("/predict?model=circles&top_k=1&logits=true", json_type, CIRCLES),
        ("/predict?model=circles&model=blobs", json_type, CIRCLES),  # first value wins
        ("/predict", "application/json; charset=utf-8", {"model": "circles", "instance": [1, 0]}),
        ("/predict?model=circles", "application/vnd.api+json", CIRCLES),
        ("/predict?model=circles", "Application/JSON", CIRCLES),
        ("/models/circles/predict", json_type, CIRCLES),
        ("/models/circles/versions/1/predict", json_type, CIRCLES),
        ("/models/circles/versions/9/predict", json_type, CIRCLES),
        ("/models/circles/predict", json_type, {"model": "blobs", **CIRCLES}),
        ("/models/nope/predict", json_type, CIRCLES),
        ("/predict?model=nope", json_type, CIRCLES),
        ("/predict?model=circles&version=abc", json_type, CIRCLES),
        ("/predict?model=circles&top_k=0", json_type, CIRCLES),
        ("/predict?model=circles", json_type, b'{"instances": [[1, 2]'),
        ("/predict?model=circles", json_type, b""),
        ("/predict?model=circles", json_type, b"[[1, 2]]"),
        ("/predict?model=circles", json_type, b'{"instances": [[NaN, 1]]}'),
        ("/predict?model=circles", json_type, {"instances": [[1, 2, 3]]}),
        ("/predict?model=circles", json_type, {"instances": [[1, "2"]]}),
        ("/predict?model=circles", json_type, {"instances": []}),
        ("/predict?model=circles", json_type, {"instances": [[1, 2]], "colour": 1}),
        ("/predict?model=fashion-mnist", json_type, {"images": [b64, b64]}),
        ("/predict?model=fashion-mnist", json_type, {"instance": fashion["images"][1].tolist()}),
        ("/predict?model=fashion-mnist&top_k=3", "image/png", png),
        ("/predict?model=fashion-mnist", "application/octet-stream", png),
        ("/predict?model=fashion-mnist", "image/png", b"not an image"),
        ("/predict?model=circles", "image/png", png),
        ("/predict", "text/plain", b"hello"),
        ("/predict", "", b"hello"),
        ("/predict", json_type, CIRCLES),  # the default model, fashion-mnist: wrong shape
    ]


def _answer(client, path, ctype, body, rid):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
    headers = {"X-Request-ID": rid}
    if ctype:
        headers["Content-Type"] = ctype
    r = client.post(path, headers=headers, **kwargs)
    return r.status_code, r.headers["Content-Type"], r.headers["X-Request-ID"], r.get_json()


def test_same_answers_as_the_flask_views(shared_app, fashion):
    fast, flask_only = shared_app.test_client(), Client(shared_app.wsgi_app.fallback)
    seen = set()
    for i, (path, ctype, body) in enumerate(_cases(fashion)):
        expected = _answer(flask_only, path, ctype, body, f"case-{i}")
        got = _answer(fast, path, ctype, body, f"case-{i}")
        assert got == expected, (path, ctype)
        seen.add(expected[0])
    assert seen == {200, 400, 404, 415, 422}  # the cases cover every outcome


def test_body_limit_same_as_flask(settings):
    app = create_app(settings, max_body_bytes=1000)
    body = b"\x89PNG" + b"0" * 2000
    for client in (app.test_client(), Client(app.wsgi_app.fallback)):
        r = client.post("/predict", data=body, content_type="image/png")
        assert r.status_code == 413
        assert (
            r.get_json()["error"]["message"] == "the request body is above the limit of 1,000 bytes"
        )
        r = client.post("/predict", data=body, content_type="text/plain")
        assert r.status_code == 415  # the media type is judged before the body is read


class _Counting:
    def __init__(self, app):
        self.app, self.calls = app, []

    def __call__(self, environ, start_response):
        self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return self.app(environ, start_response)


def test_only_predict_posts_with_a_length_take_the_fast_path(settings, fashion):
    app = create_app(settings)
    counting = _Counting(app.wsgi_app.fallback)
    app.wsgi_app.fallback = counting
    client = app.test_client()
    for path in ("/predict?model=circles", "/models/circles/predict",
                 "/models/circles/versions/1/predict"):  # fmt: skip
        assert client.post(path, json=CIRCLES).status_code == 200
    assert counting.calls == []
    png = image_bytes(fashion["images"][0])
    multipart = {"file": (io.BytesIO(png), "a.png")}
    assert client.post("/predict?model=fashion-mnist", data=multipart).status_code == 200
    chunked = {  # as gunicorn hands over a chunked upload: no CONTENT_LENGTH
        "REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "QUERY_STRING": "model=circles",
        "CONTENT_TYPE": "application/json", "wsgi.input": io.BytesIO(b'{"instance": [0, 0]}'),
        "wsgi.input_terminated": True, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }  # fmt: skip
    status, _, body = _call(app, chunked)
    assert status.startswith("200")
    assert json.loads(body)["model"]["name"] == "circles"
    assert client.get("/predict").status_code == 405
    assert client.post("/predict/", json=CIRCLES).status_code == 404
    assert client.get("/models").status_code == 200
    assert counting.calls == [("POST", "/predict"), ("POST", "/predict"), ("GET", "/predict"),
                              ("POST", "/predict/"), ("GET", "/models")]  # fmt: skip


def test_routes_are_the_flask_rules(shared_app):
    rules = {r.rule for r in shared_app.url_map.iter_rules() if r.endpoint.startswith("predict.")}
    assert {rule for _, rule in fastpath.ROUTES} == rules
    assert fastpath.match("/models/a.b-c/versions/12/predict") == (
        "/models/<string:name>/versions/<int:version>/predict", "a.b-c", 12)  # fmt: skip
    assert fastpath.match("/models/a/b/predict") is None
    assert fastpath.match("/models/a/versions/x/predict") is None
    assert fastpath.match("/v2/predict") is None


def test_query_options_read_like_werkzeug():
    assert fastpath.query_options("") == {}
    assert fastpath.query_options("model=a&model=b&top_k=&x=1+2") == {
        "model": "a", "top_k": "", "x": "1 2"}  # fmt: skip
    assert fastpath.query_options("model=%C3%A9t%C3%A9") == {"model": "été"}
    assert fastpath.query_options("model=\xc3\xa9") == {"model": "é"}  # raw UTF-8, latin-1 in WSGI


def _call(app, environ):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))

    body = b"".join(app.wsgi_app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_body_shorter_than_its_length_is_a_400(shared_app):
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "QUERY_STRING": "model=circles",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "100",
        "wsgi.input": io.BytesIO(b'{"instance": [0, 0]}'),
    }  # fmt: skip
    status, headers, body = _call(shared_app, environ)
    assert status == "400 Bad Request"
    error = json.loads(body)["error"]
    assert error == {
        "code": "bad_request",
        "message": "the request body ended after 20 of 100 bytes",
    }
    assert headers["Content-Length"] == str(len(body))


def test_unexpected_exception_is_a_logged_500_and_serving_goes_on(shared_app, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    client = shared_app.test_client()
    monkeypatch.setattr(fastpath, "answer", broken)
    with caplog.at_level(logging.ERROR, logger="service.app"):
        r = client.post("/predict?model=circles", json=CIRCLES, headers={"X-Request-ID": "bug-1"})
    assert r.status_code == 500
    assert r.get_json() == {
        "error": {"code": "internal_error",
                  "message": "internal error; the request id identifies it in the logs"},
        "request_id": "bug-1",
    }  # fmt: skip
    assert "KeyError" not in r.get_data(as_text=True)
    (record,) = [rec for rec in caplog.records if rec.getMessage().startswith("unhandled error")]
    assert record.request_id == "bug-1"
    assert record.exc_info[0] is KeyError
    monkeypatch.undo()
    assert client.post("/predict?model=circles", json=CIRCLES).status_code == 200


@pytest.mark.parametrize("path", ["/predict?model=circles", "/models/circles/predict"])
def test_metrics_and_access_log_match_the_flask_path(settings, path, caplog):
    from service import metrics

    endpoint = path.split("?")[0] if "?" in path else "/models/<string:name>/predict"
    app = create_app(settings)
    counter = metrics.HTTP_REQUESTS.labels(endpoint, "POST", "200")
    errors = metrics.ERRORS.labels("validation", "validation_error")
    before, errors_before = counter._value.get(), errors._value.get()
    with caplog.at_level(logging.INFO, logger="service.access"):
        for client in (app.test_client(), Client(app.wsgi_app.fallback)):
            assert (
                client.post(path, json=CIRCLES, headers={"X-Request-ID": "m-1"}).status_code == 200
            )
            assert client.post(path, json={"instances": []}).status_code == 422
    assert counter._value.get() - before == 2
    assert errors._value.get() - errors_before == 2
    lines = [r for r in caplog.records if r.name == "service.access"]
    fields = ("method", "path", "endpoint", "status", "model", "version", "instances", "error")
    assert len(lines) == 4
    fast, flask_ = lines[0], lines[2]
    assert [getattr(fast, f) for f in fields] == [getattr(flask_, f) for f in fields]
    assert fast.request_id == flask_.request_id == "m-1"
    assert (fast.endpoint, fast.model, fast.instances) == (endpoint, "circles", 2)
    assert [getattr(lines[1], f) for f in fields] == [getattr(lines[3], f) for f in fields]
    assert lines[1].error == "validation_error"


_OPTION_CASES = [
    {"instances": [[1, 2]]},
    {"instances": [[1, 2]], "model": "circles", "version": 1, "top_k": 2, "logits": True},
    {"instance": [1, 2], "model": "x" * 64},
    {"instance": "abc"},
    {"instance": 0},
    {"images": ["aGk=", "aGk="]},
    {"image": "aGk=", "logits": False},
    {"instances": [[None, 2]]},
    {"instances": []},
    # each of these is not the common shape: the schema loads it or words the error
    {"instances": [None]},
    {"instance": None},
    {"images": ["a", None]},
    {"images": "a"},
    {"image": 3},
    {"model": "", "instance": 1},
    {"model": "x" * 65, "instance": 1},
    {"model": 3, "instance": 1},
    {"instance": 1, "version": True},
    {"instance": 1, "version": 2.0},
    {"instance": 1, "version": "2"},
    {"instance": 1, "version": 0},
    {"instance": 1, "top_k": -1},
    {"instance": 1, "logits": "true"},
    {"instance": 1, "logits": 1},
    {"instance": 1, "colour": 1},
    {"instance": 1, "image": "a"},
    {"model": "circles"},
    {},
]


@pytest.mark.parametrize("data", _OPTION_CASES)
def test_plain_options_agree_with_the_schema(data):
    from marshmallow import ValidationError

    from service.schemas import PredictJSONSchema, plain_options

    try:
        expected = PredictJSONSchema().load(data)
    except ValidationError:
        expected = None
    got = plain_options(dict(data))
    if got is not None:  # the shortcut answers only where the schema loads the same dict
        assert got == expected
    assert (got is None) == (data in _OPTION_CASES[9:])
