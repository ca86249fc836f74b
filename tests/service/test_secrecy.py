"""What must not leak: an API key, into a log line or a response, whatever is malformed
around it; and to a caller without a ``read`` key, what readiness knows of the models.

Each request below carries a key (in ``Authorization: Bearer``, ``X-API-Key`` or the query
string) next to something wrong: a broken body, a bad header (another header, the key's,
folded into its value), an unknown route, a wrong key. Every log record of the app (the
access log included), formatted as the service writes it, and every response's status line,
headers and body are searched for any 12 characters of the key, in any case.
"""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from service.app import create_app
from service.keys import DETAILS_NEED_READ, digest, parse
from service.logs import JsonFormatter
from service.settings import Settings
from tests.helpers import MODELS
from tests.service.models.test_lifecycle import publish

# Shaped like the keys `python -m service.keys` makes; WRONG is in no keys file.
PREDICT = "ksk_Zq3vP8sLk2mN4rT6wX9yB1cD5fG7hJ0aE2iO4uY6tR8"
READ = "ksk_Hb7nM2qW5eR8tY1uI4oP6aS9dF3gJ0kL2zX5cV8bN1m"
WRONG = "ksk_Wr0ngKeyNobodyHasThisOneAtAll1234567890abc"
SECRETS = (PREDICT, READ, WRONG)
POINT = {"instances": [[0.1, 0.2]]}
FOLDED = f"Authorization: Bearer {PREDICT}"
JSON = "application/json"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"app:{digest(PREDICT)}:predict\ndashboard:{digest(READ)}:read\n")
    settings = Settings.from_env(
        {},
        model_repository=MODELS,
        default_model="circles",
        poll_interval_s=0,
        api_keys_file=str(keys_file),
        log_level="DEBUG",
    )
    app = create_app(settings)

    @app.get("/boom")  # a user's Flask route that fails: Flask logs its traceback
    def boom():
        raise RuntimeError("the route failed")

    return app


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records(caplog):
    """Every record the service's loggers (which do not propagate) and the rest emit."""
    collector = _Collector()
    service = logging.getLogger("service")
    service.addHandler(collector)
    caplog.set_level(logging.DEBUG)
    try:
        yield lambda: list({id(r): r for r in (*collector.records, *caplog.records)}.values())
    finally:
        service.removeHandler(collector)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CASES = [
    # (method, path, client.open keyword arguments, expected status)
    ("POST", "/predict", {"headers": bearer(PREDICT), "data": b'{"instances": [[1,'}, 400),
    ("POST", "/predict", {"headers": {"X-API-Key": PREDICT}, "data": b"[[1, 2]]"}, 422),
    (
        "POST",
        "/predict",
        {"headers": bearer(PREDICT), "environ_overrides": {"CONTENT_LENGTH": "12 bytes"}},
        400,
    ),
    (
        "POST",
        "/predict",
        {"headers": bearer(PREDICT), "environ_overrides": {"CONTENT_LENGTH": "9" * 12}},
        413,
    ),
    ("POST", "/predict", {"headers": bearer(PREDICT), "content_type": "text/plain"}, 415),
    (
        "POST",
        "/predict",
        {"headers": {**bearer(PREDICT), "Content-Encoding": "br"}, "data": b"{}"},
        415,
    ),
    (
        "POST",
        "/predict",
        {"headers": {**bearer(PREDICT), "Content-Encoding": "gzip"}, "data": b"\x1f\x8bjunk"},
        400,
    ),
    (
        "POST",
        "/predict",
        {
            "headers": {**bearer(PREDICT), "Content-Encoding": "gzip"},
            "data": gzip.compress(json.dumps(POINT).encode())[:-9],
        },
        400,
    ),
    (
        "POST",
        "/predict",
        {
            "headers": bearer(PREDICT),
            "content_type": "multipart/form-data; boundary=xx",
            "data": b"--xx\r\nContent-Type: image/png\r\n\r\nabc\r\n--xx--\r\n",
        },
        400,
    ),
    # Another header folded into a value by a broken client or proxy, a key with it.
    ("POST", "/predict", {"headers": bearer(PREDICT), "content_type": f"text/csv {FOLDED}"}, 415),
    (
        "POST",
        "/predict",
        {"headers": bearer(PREDICT), "content_type": f"application/xml, X-API-Key: {PREDICT}"},
        415,
    ),
    (
        "POST",
        "/predict",
        {"headers": {**bearer(PREDICT), "Content-Encoding": f"br, {FOLDED}"}, "data": b"{}"},
        415,
    ),
    (
        "POST",
        "/predict",
        {"headers": bearer(PREDICT), "environ_overrides": {"CONTENT_LENGTH": f"2 {FOLDED}"}},
        400,
    ),
    (
        "POST",
        "/v2/models/circles/infer",
        {
            "headers": {**bearer(PREDICT), "Inference-Header-Content-Length": f"2, {FOLDED}"},
            "data": b"{}",
        },
        400,
    ),
    ("POST", "/predict", {"headers": bearer(WRONG), "json": POINT}, 401),
    ("POST", "/predict", {"headers": {"X-API-Key": WRONG}, "data": b"{not json"}, 401),
    ("POST", "/predict", {"headers": bearer(READ), "data": b"{not json"}, 403),
    ("POST", "/predict", {"headers": {"Authorization": f"Token {PREDICT}"}, "json": POINT}, 401),
    ("POST", "/predict", {"headers": {"Authorization": f"Bearer{PREDICT}"}, "json": POINT}, 401),
    ("POST", "/predict", {"headers": bearer(f"{PREDICT} {READ}"), "json": POINT}, 401),
    ("POST", "/predict", {"headers": {"X-API-Key": f"{PREDICT}\u00e9"}, "json": POINT}, 401),
    ("POST", "/predict", {"headers": {"X-API-Key": f"{PREDICT},{WRONG}"}, "json": POINT}, 401),
    ("POST", f"/predict?api_key={PREDICT}", {"json": POINT}, 401),  # never read from the URL
    (
        "POST",
        f"/predict?api_key={PREDICT}&access_token={READ}&key={WRONG}",
        {"headers": bearer(PREDICT), "json": POINT},
        422,
    ),
    ("POST", f"/predict?top_k={PREDICT}", {"headers": bearer(PREDICT), "json": POINT}, 422),
    ("POST", "/models/nope/predict", {"headers": bearer(PREDICT), "json": POINT}, 404),
    ("DELETE", "/predict", {"headers": bearer(PREDICT)}, 405),
    ("HEAD", "/models", {"headers": bearer(WRONG)}, 401),
    ("GET", f"/nope?api_key={PREDICT}", {"headers": bearer(PREDICT)}, 404),
    ("GET", "/boom", {"headers": {"X-API-Key": PREDICT}}, 500),
    ("GET", f"/health/ready?api_key={READ}", {}, 200),
    ("GET", f"/metrics?token={READ}", {"headers": bearer(WRONG)}, 200),
    ("GET", "/models/circles/versions/1/report/..%2Fmodel.onnx", {"headers": bearer(READ)}, 404),
    (
        "POST",
        "/v2/models/circles/infer",
        {"headers": bearer(PREDICT), "data": b'{"inputs": [', "content_type": JSON},
        400,
    ),
    ("POST", "/v2/models/circles/infer", {"headers": bearer(WRONG), "json": {}}, 401),
    (
        "POST",
        "/v1/models/circles:predict",
        {"headers": {"X-API-Key": PREDICT}, "json": {"instances": "x"}},
        400,
    ),
    ("POST", "/v1/models/circles:predict", {"headers": {"X-API-Key": READ}, "json": POINT}, 403),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), CASES)
def test_no_key_in_any_log_line_or_response(app, records, method, path, kwargs, status):
    if method == "POST" and "json" not in kwargs:
        kwargs = {"content_type": JSON, **kwargs}
    response = app.test_client().open(path, method=method, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    shown = [response.status, *map(str, response.headers.items()), response.get_data(as_text=True)]
    logged = records()
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in logged]
    assert any(r.name == "service.access" for r in logged)  # the request was logged
    texts = [t.lower() for t in (*shown, *lines)]
    for secret in SECRETS:  # nor any 12 characters of it, in any case
        pieces = {secret[i : i + 12].lower() for i in range(len(secret) - 11)}
        for text in texts:
            assert not any(piece in text for piece in pieces), text


def test_the_access_log_has_the_path_without_the_query_string(app, records):
    client = app.test_client()
    answered = client.post(f"/predict?model=circles&api_key={PREDICT}", json=POINT)
    assert answered.status_code == 401
    (access,) = [r for r in records() if r.name == "service.access"]
    assert (access.path, access.getMessage()) == ("/predict", "POST /predict 401")
    assert access.key_id == "none"
    served = client.post(
        f"/predict?model=circles&top_k=1&x={WRONG}", json=POINT, headers=bearer(PREDICT)
    )
    assert served.status_code == 422
    assert served.get_json()["error"]["details"] == {"x": ["Unknown field."]}
    access = [r for r in records() if r.name == "service.access"][-1]
    assert (access.path, access.key_id, access.error) == ("/predict", "app", "validation_error")


def test_a_key_pasted_as_its_own_id_is_refused_without_being_repeated():
    found, problems = parse(f"{PREDICT}:{digest(PREDICT)}:predict\napp:{digest(READ)}:read\n")
    assert [k.id for k in found] == ["app"]  # else its id, i.e. the key, is logged and shown
    assert problems == ["line 1: the id is the key itself; name the key instead"]


@pytest.mark.parametrize("keys_on", [True, False])
def test_keyless_readiness_says_as_little_in_v2_as_natively(tmp_path, keys_on):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"app:{digest(PREDICT)}:predict\ndashboard:{digest(READ)}:read\n")
    (tmp_path / "models").mkdir()
    publish(tmp_path / "models", "blobs", 1, source="blobs")
    version = publish(tmp_path / "models", "circles", 1)
    (version / "model.onnx").write_bytes(b"not the model its metadata names")
    settings = Settings.from_env(
        {},
        model_repository=tmp_path / "models",
        default_model="circles",
        poll_interval_s=0,
        api_keys_file=str(keys_file) if keys_on else "",
    )
    client = create_app(settings).test_client()
    reason = client.get("/health/ready", headers=bearer(READ)).get_json()["reason"]
    assert reason.startswith("default model: model 'circles' version 1")  # what is hidden
    callers = {
        "no key": {},
        "a wrong key": bearer(WRONG),
        "a predict key": {"X-API-Key": PREDICT},
        "a read key": bearer(READ),
    }
    for who, headers in callers.items():
        native = client.get("/health/ready", headers=headers)
        v2 = client.get("/v2/health/ready", headers=headers)
        assert (native.status_code, v2.status_code) == (503, 400)
        if keys_on and who != "a read key":
            assert native.get_json() == {"status": "not_ready", "reason": DETAILS_NEED_READ}
            assert v2.get_json() == {"ready": False, "error": DETAILS_NEED_READ}, who
        else:
            assert native.get_json()["reason"] == reason
            assert native.get_json()["models"] == {"blobs/1": "loaded", "circles/1": "failed"}
            assert v2.get_json() == {"ready": False, "error": reason}, who


def test_ready_v2_says_only_ready_and_native_hides_the_model_list(app):
    client = app.test_client()
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/health/ready").get_json() == {
        "status": "ready",
        "reason": DETAILS_NEED_READ,
    }
    detailed = client.get("/health/ready", headers=bearer(READ)).get_json()
    assert detailed["models"]["circles/1"] == "loaded"
