"""service.http.dispatcher and service.http.messages: one request path for every route and protocol.

The fast path's parity tests held two HTTP layers to the same answers; there is one layer
now, so the same 31 requests hold its two ways of receiving a body (Content-Length and
chunked) to the same answers, and every cross-cutting concern is checked on every protocol.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import zlib

import pytest
from flask import Flask

from service import metrics
from service.app import create_app
from service.http import access
from service.http.dispatcher import Dispatcher
from service.http.messages import query_options
from service.protocols.routes import ROUTES
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


def _environ(path: str, ctype: str, body: bytes, chunked: bool) -> dict:
    path, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": ctype,
        "wsgi.input": io.BytesIO(body),
        "HTTP_X_REQUEST_ID": "case",
    }
    if chunked:  # as gunicorn hands over a chunked upload: no CONTENT_LENGTH
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def _call(app, environ):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))

    body = b"".join(app.wsgi_app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_chunked_and_sized_bodies_get_the_same_answers(shared_app, fashion):
    seen = set()
    for path, ctype, body in _cases(fashion):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sized = _call(shared_app, _environ(path, ctype, data, chunked=False))
        chunked = _call(shared_app, _environ(path, ctype, data, chunked=True))
        assert sized[0] == chunked[0], (path, ctype)
        assert sized[1] == chunked[1], (path, ctype)
        assert json.loads(sized[2]) == json.loads(chunked[2]), (path, ctype)
        assert sized[1]["Content-Length"] == str(len(sized[2]))
        seen.add(int(sized[0][:3]))
    assert seen == {200, 400, 404, 415, 422}  # the cases cover every outcome


def test_body_limits(settings):
    app = create_app(settings, max_body_bytes=1000)
    client = app.test_client()
    body = b"\x89PNG" + b"0" * 2000
    r = client.post("/predict", data=body, content_type="image/png")
    assert r.status_code == 413
    assert r.get_json()["error"]["message"] == "the request body is above the limit of 1,000 bytes"
    r = client.post("/predict", data=body, content_type="text/plain")
    assert r.status_code == 415  # the media type is judged before the body is read
    status, _, answer = _call(app, _environ("/predict", "image/png", body, chunked=True))
    assert status.startswith("413")  # a chunked body is cut at the limit, and refused
    assert json.loads(answer)["error"]["code"] == "payload_too_large"
    status, _, answer = _call(app, _environ("/v2/models/circles/infer", "", body, True))
    assert status.startswith("413")
    assert json.loads(answer) == {"error": "the request body is above the limit of 1,000 bytes"}


def test_body_shorter_than_its_length_is_a_400(shared_app):
    environ = _environ(
        "/predict?model=circles", "application/json", b'{"instance": [0, 0]}', chunked=False
    )
    environ["CONTENT_LENGTH"] = "100"
    status, headers, body = _call(shared_app, environ)
    assert status == "400 Bad Request"
    assert json.loads(body)["error"] == {
        "code": "bad_request",
        "message": "the request body ended after 20 of 100 bytes",
    }
    assert headers["Content-Length"] == str(len(body))


def test_a_body_the_server_cannot_read_is_a_400(shared_app):
    class Broken(io.RawIOBase):
        def read(self, size=-1):
            raise OSError("Invalid chunk size")

    environ = _environ("/predict?model=circles", "application/json", b"", chunked=True)
    environ["wsgi.input"] = Broken()
    status, _, body = _call(shared_app, environ)
    assert status == "400 Bad Request"
    assert json.loads(body)["error"]["message"] == "the request body could not be read: OSError"


def test_compressed_request_bodies(client, settings):
    plain = json.dumps(CIRCLES).encode()
    expected = client.post("/predict?model=circles", data=plain, content_type="application/json")
    for encoding, data in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        r = client.post(
            "/predict?model=circles",
            data=data,
            content_type="application/json",
            headers={"Content-Encoding": encoding},
        )
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["predictions"] == expected.get_json()["predictions"]
    r = client.post(
        "/predict?model=circles",
        data=b"\x1f\x8bnot gzip",
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 400
    assert "could not be decompressed" in r.get_json()["error"]["message"]
    r = client.post(
        "/predict?model=circles",
        data=plain,
        content_type="application/json",
        headers={"Content-Encoding": "br"},
    )
    assert r.status_code == 415
    small = create_app(settings, max_body_bytes=5000).test_client()
    bomb = gzip.compress(b"[" + b"0," * 50_000 + b"0]")  # 100 KB inflated, 200 bytes sent
    r = small.post(
        "/predict?model=circles",
        data=bomb,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 413
    assert (
        "decompressed request body is above the limit of 5,000" in r.get_json()["error"]["message"]
    )


def test_responses_are_compressed_when_the_client_accepts_it(client):
    plain = client.get("/openapi.json")
    assert "Content-Encoding" not in plain.headers
    for encoding, decompress in (("gzip", gzip.decompress), ("deflate", zlib.decompress)):
        r = client.get("/openapi.json", headers={"Accept-Encoding": f"{encoding}, br;q=0"})
        assert r.headers["Content-Encoding"] == encoding
        assert r.headers["Vary"] == "Accept-Encoding"
        assert int(r.headers["Content-Length"]) == len(r.data) < len(plain.data)
        assert json.loads(decompress(r.data)) == plain.get_json()
    r = client.get("/health/live", headers={"Accept-Encoding": "gzip"})  # too small to bother
    assert "Content-Encoding" not in r.headers
    assert r.get_json() == {"status": "alive"}
    r = client.get("/openapi.json", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in r.headers


def test_404_and_405_in_each_protocols_shape(client):
    r = client.get("/predict")
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert r.get_json()["error"]["code"] == "method_not_allowed"
    assert r.get_json()["error"]["details"] == {"allowed": ["POST"]}
    r = client.delete("/models/circles")
    assert (r.status_code, r.headers["Allow"]) == (405, "GET, HEAD")
    r = client.get("/v2/models/circles/infer")
    assert (r.status_code, r.get_json()) == (
        405,
        {"error": "GET is not allowed on /v2/models/circles/infer"},
    )
    assert r.headers["Allow"] == "POST"
    r = client.get("/v2/nowhere")
    assert (r.status_code, r.get_json()) == (
        404,
        {"error": "no route for GET /v2/nowhere; see /docs"},
    )
    r = client.get("/v1/models/circles/nowhere")
    assert r.status_code == 404
    assert set(r.get_json()) == {"error"}
    r = client.get("/nowhere")
    assert r.get_json()["error"]["code"] == "not_found"
    assert r.get_json()["request_id"] == r.headers["X-Request-ID"]
    assert client.post("/predict/", json=CIRCLES).status_code == 404


def test_head_and_options(client):
    get = client.get("/models")
    head = client.head("/models")
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    r = client.options("/v2/models/circles/infer")
    assert (r.status_code, r.headers["Allow"], r.data) == (204, "POST", b"")


def test_routes_match_templates_and_colon_verbs(shared_app):
    router = shared_app.wsgi_app.router
    route, params, _, _ = router.match("POST", "/models/a.b-c/versions/12/predict")
    assert (route.template, params) == (
        "/models/{model}/versions/{version}/predict",
        {"model": "a.b-c", "version": "12"},
    )
    route, params, _, _ = router.match("POST", "/v1/models/fashion-mnist:predict")
    assert (route.handler.__name__, params) == ("predict", {"model": "fashion-mnist"})
    route, params, _, _ = router.match("POST", "/v1/models/a/versions/3:classify")
    assert (route.handler.__name__, params) == ("classify", {"model": "a", "version": "3"})
    route, params, _, _ = router.match("GET", "/v1/models/fashion-mnist")
    assert (route.handler.__name__, params) == ("status", {"model": "fashion-mnist"})
    assert router.match("GET", "/v2/models/stats").route.template == "/v2/models/stats"
    assert router.match("POST", "/models/a/b/predict") == (None, {}, "unmatched", [])
    assert router.match("GET", "/models//predict").route is None


def test_every_documented_route_is_in_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()
    documented = {(r.template, r.method.lower()) for r in ROUTES if r.doc is not None}
    in_spec = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert in_spec == documented
    hidden = {r.template for r in ROUTES if r.doc is None}
    assert hidden == {
        "/openapi.json",
        "/docs",
        "/docs/assets/{filename}",
        "/",
        "/console",
        "/console/assets/{filename}",
        "/v1/models/{model}:regress",
        "/v1/models/{model}/versions/{version}:regress",
        "/v1/models/{model}/labels/{label}:regress",
    }
    infer = spec["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]
    assert [p["name"] for p in infer["parameters"]] == ["model", "version"]
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_query_options_read_like_werkzeug():
    assert query_options("") == {}
    assert query_options("model=a&model=b&top_k=&x=1+2") == {"model": "a", "top_k": "", "x": "1 2"}
    assert query_options("model=%C3%A9t%C3%A9") == {"model": "été"}
    assert query_options("model=\xc3\xa9") == {"model": "é"}  # raw UTF-8, latin-1 in WSGI


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/predict?model=circles", CIRCLES, "native"),
        (
            "/v2/models/circles/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0, 0]}]},
            "v2",
        ),
        ("/v1/models/circles:predict", {"instances": [[0, 0]]}, "tfserving"),
    ],
)
def test_an_unexpected_exception_is_a_logged_500_and_serving_goes_on(
    shared_app, monkeypatch, caplog, path, body, shape
):
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    client = shared_app.test_client()
    monkeypatch.setattr(shared_app.extensions["serving"].dataplane, "infer", broken)
    with caplog.at_level(logging.ERROR, logger="service.app"):
        r = client.post(path, json=body, headers={"X-Request-ID": "bug-1"})
    assert r.status_code == 500
    message = "internal error; the request id identifies it in the logs"
    if shape == "native":
        assert r.get_json() == {
            "error": {"code": "internal_error", "message": message},
            "request_id": "bug-1",
        }
    else:
        assert r.get_json() == {"error": message}
    assert r.headers["X-Request-ID"] == "bug-1"
    assert "KeyError" not in r.get_data(as_text=True)
    (record,) = [rec for rec in caplog.records if rec.getMessage().startswith("unhandled error")]
    assert record.request_id == "bug-1"
    assert record.exc_info[0] is KeyError
    monkeypatch.undo()
    assert client.post(path, json=body).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "endpoint"),
    [
        ("/predict?model=circles", CIRCLES, "/predict"),
        ("/models/circles/predict", CIRCLES, "/models/{model}/predict"),
        (
            "/v2/models/circles/infer",
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [0, 0, 1, 0]}
                ]
            },
            "/v2/models/{model}/infer",
        ),
        (
            "/v1/models/circles:predict",
            {"instances": [[0, 0], [1, 0]]},
            "/v1/models/{model}:predict",
        ),
    ],
)
def test_metrics_and_access_log_on_every_protocol(settings, path, body, endpoint, caplog):
    app = create_app(settings)
    ok = metrics.HTTP_REQUESTS.labels(endpoint, "POST", "200")
    bad_status = "400" if endpoint.startswith(("/v1", "/v2")) else "422"
    bad = metrics.HTTP_REQUESTS.labels(endpoint, "POST", bad_status)
    before, bad_before = ok._value.get(), bad._value.get()
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="service.access"):
        assert client.post(path, json=body, headers={"X-Request-ID": "m-1"}).status_code == 200
        assert client.post(path, json={"instances": []}).status_code == int(bad_status)
    assert ok._value.get() - before == 1
    assert bad._value.get() - bad_before == 1
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 2
    first = lines[0]
    assert (
        first.request_id,
        first.endpoint,
        first.model,
        first.version,
        first.instances,
        first.status,
    ) == ("m-1", endpoint, "circles", 1, 2, 200)
    assert lines[1].error in ("validation_error", "bad_request")


def test_unknown_methods_share_one_metric_label(client):
    before = metrics.HTTP_REQUESTS.labels("unmatched", "other", "404")._value.get()
    for method in ("FOO", "BAR", "PROPFIND"):
        assert client.open("/nowhere", method=method).status_code == 404
    assert metrics.HTTP_REQUESTS.labels("unmatched", "other", "404")._value.get() == before + 3


def test_quality_zero_in_any_spelling_refuses_an_encoding(client):
    for header in ("gzip;q=0.0", "gzip; q=0, deflate;q=0.000", "br"):
        r = client.get("/openapi.json", headers={"Accept-Encoding": header})
        assert "Content-Encoding" not in r.headers, header
    r = client.get("/openapi.json", headers={"Accept-Encoding": "gzip;q=0, deflate;q=0.5"})
    assert r.headers["Content-Encoding"] == "deflate"


def test_the_dispatcher_wraps_flasks_own_wsgi_app(shared_app):
    wrapped = shared_app.wsgi_app.app
    assert wrapped.__self__ is shared_app
    assert wrapped.__func__ is Flask.wsgi_app  # Flask's original, not replaced


def test_only_paths_the_table_does_not_know_reach_the_wrapped_app(shared_app):
    seen = []

    def app(environ, start_response):
        seen.append((environ["PATH_INFO"], environ[access.ENVIRON_REQUEST_ID]))
        environ[access.ENVIRON_RULE] = "/fake/<x>"
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"answered by the app"]

    dispatcher = Dispatcher(shared_app.wsgi_app.router, shared_app.extensions["serving"], app)
    wrapper = type("Wrapper", (), {"wsgi_app": dispatcher})
    before = metrics.HTTP_REQUESTS.labels("/fake/<x>", "GET", "201")._value.get()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/fake/1", "HTTP_X_REQUEST_ID": "app-1"}
    status, headers, body = _call(wrapper, environ)
    assert (status, body) == ("201 Created", b"answered by the app")
    assert headers == {"Content-Type": "text/plain", "X-Request-ID": "app-1"}
    assert seen == [("/fake/1", "app-1")]
    assert metrics.HTTP_REQUESTS.labels("/fake/<x>", "GET", "201")._value.get() == before + 1
    for method, path, expected in (
        ("GET", "/predict", "405 Method Not Allowed"),  # a table path: the dispatcher's 405
        ("OPTIONS", "/predict", "204 No Content"),
        ("GET", "/health/live", "200 OK"),
    ):
        status, _, _ = _call(wrapper, {"REQUEST_METHOD": method, "PATH_INFO": path})
        assert status == expected, path
    assert seen == [("/fake/1", "app-1")]
    _call(wrapper, {"REQUEST_METHOD": "POST", "PATH_INFO": "/models/a/b/predict"})
    assert seen[-1][0] == "/models/a/b/predict"


def test_without_a_wrapped_app_the_dispatcher_answers_404_itself(shared_app):
    dispatcher = Dispatcher(shared_app.wsgi_app.router, shared_app.extensions["serving"])
    wrapper = type("Wrapper", (), {"wsgi_app": dispatcher})
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/nowhere", "HTTP_X_REQUEST_ID": "own-404"}
    status, _, body = _call(wrapper, environ)
    assert status == "404 Not Found"
    assert json.loads(body) == {
        "error": {"code": "not_found", "message": "no route for GET /nowhere; see /docs"},
        "request_id": "own-404",
    }


def test_an_app_that_raises_is_counted_as_a_500_and_leaves_nothing_in_progress(shared_app):
    def app(environ, start_response):
        raise RuntimeError("propagated, as Flask's testing mode does")

    dispatcher = Dispatcher(shared_app.wsgi_app.router, shared_app.extensions["serving"], app)
    gauge = metrics.HTTP_IN_PROGRESS.labels("(app)", "GET")
    before, errors = gauge._value.get(), metrics.HTTP_REQUESTS.labels("unmatched", "GET", "500")
    counted = errors._value.get()
    with pytest.raises(RuntimeError, match="propagated"):
        dispatcher({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    assert gauge._value.get() == before
    assert errors._value.get() == counted + 1
