"""API keys: the file format, 401/403 in each protocol's shape, scopes per route family,
both header forms, reloading, per-key metrics, and the CLI that makes keys."""

from __future__ import annotations

import os
import time

import pytest

from service import keys, metrics
from service.app import create_app
from service.keys import KeyFile, KeyFileError, digest, parse
from service.settings import Settings
from tests.helpers import MODELS

PREDICT, READ, ADMIN = "ksk_predict-key", "ksk_read-key", "ksk_admin-key"
POINT = {"instances": [[0.1, 0.2]]}
V2_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}]}


def keys_text() -> str:
    return (f"# made by tests\napp:{digest(PREDICT)}:predict\n"
            f"dashboard:{digest(READ)}:read   # a comment after a line\n"
            f"ops:{digest(ADMIN)}:admin,read,predict\n")  # fmt: skip


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(keys_text())
    return path


@pytest.fixture(scope="module")
def client(keys_file):
    settings = Settings.from_env({}, model_repository=MODELS, default_model="circles",
                                 poll_interval_s=0, api_keys_file=str(keys_file))  # fmt: skip
    app = create_app(settings)
    return app.test_client()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_parse_reads_lines_and_reports_bad_ones_by_number_only():
    text = keys_text() + "nocolons\nx:abc:predict\nbad id:" + "0" * 64 + ":predict\n"
    text += f"app:{'1' * 64}:predict\nweird:{'2' * 64}:root\n"
    found, problems = parse(text)
    assert [(k.id, sorted(k.scopes)) for k in found] == [
        ("app", ["predict"]),
        ("dashboard", ["read"]),
        ("ops", ["admin", "predict", "read"]),
    ]
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7", "line 8", "line 9"]
    assert "used twice" in problems[3]
    assert "scopes" in problems[4]
    assert not any("nocolons" in p for p in problems)  # a line's text is never repeated


def test_a_request_without_a_key_gets_401_with_a_challenge_in_each_protocols_shape(client):
    native = client.post("/predict", json=POINT)
    assert native.status_code == 401
    assert native.headers["WWW-Authenticate"] == 'Bearer realm="keras-classifier-serving"'
    assert native.get_json()["error"]["code"] == "unauthorized"
    v2 = client.post("/v2/models/circles/infer", json=V2_BODY)
    assert v2.status_code == 401
    assert isinstance(v2.get_json()["error"], str)
    tf = client.post("/v1/models/circles:predict", json=POINT)
    assert tf.status_code == 401
    assert "API key is required" in tf.get_json()["error"]


def test_an_unknown_key_is_401_invalid_token(client):
    response = client.post("/predict", json=POINT, headers=bearer("ksk_guess"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    basic = {"Authorization": f"Basic {PREDICT}"}
    wrong_scheme = client.post("/predict", json=POINT, headers=basic)
    assert wrong_scheme.status_code == 401


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("POST", "/predict", "predict"),
    ("POST", "/models/circles/predict", "predict"),
    ("POST", "/v2/models/circles/infer", "predict"),
    ("POST", "/v1/models/circles:predict", "predict"),
    ("POST", "/v1/models/circles:classify", "predict"),
    ("GET", "/models", "read"),
    ("GET", "/models/circles/versions/1", "read"),
    ("GET", "/v2/models/circles", "read"),
    ("GET", "/v2/models/circles/config", "read"),
    ("GET", "/v2/models/stats", "read"),
    ("GET", "/v2", "read"),
    ("GET", "/v1/models/circles/metadata", "read"),
    ("POST", "/v2/repository/index", "admin"),
    ("POST", "/v2/repository/models/blobs/load", "admin"),
    ("POST", "/models/blobs/load", "admin"),
])  # fmt: skip
def test_each_route_family_needs_its_scope(client, method, path, scope):
    body = {
        "/v2/models/circles/infer": V2_BODY,
        "/v1/models/circles:classify": {"examples": [{"x1": 0.1, "x2": 0.2}]},
    }.get(path)
    if method == "POST" and body is None and "repository" not in path and "load" not in path:
        body = POINT
    holders = {"predict": PREDICT, "read": READ, "admin": ADMIN}
    for key in (PREDICT, READ, ADMIN):
        response = client.open(path, method=method, json=body, headers=bearer(key))
        allowed = key == holders[scope] or key == ADMIN
        assert (response.status_code != 403) == allowed, (key, response.get_json())
        if not allowed:
            assert f"lacks the '{scope}' scope" in str(response.get_json())
    # the other header form
    response = client.open(path, method=method, json=body, headers={"X-API-Key": ADMIN})
    assert response.status_code not in (401, 403)


def test_health_and_docs_are_open_and_metrics_open_by_default(client):
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready",
                 "/openapi.json", "/docs", "/metrics"):  # fmt: skip
        assert client.get(path).status_code == 200, path


def test_metrics_can_require_the_read_scope(keys_file):
    app = create_app(Settings.from_env({}, model_repository=MODELS, default_model="circles",
                                       poll_interval_s=0, api_keys_file=str(keys_file),
                                       metrics_auth=True))  # fmt: skip
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(PREDICT)).status_code == 403
    assert client.get("/metrics", headers=bearer(READ)).status_code == 200


def test_requests_are_counted_by_key_id_never_by_key(client):
    counter = metrics.KEY_REQUESTS.labels("app", "/predict", "200")
    before = counter._value.get()
    assert client.post("/predict", json=POINT, headers=bearer(PREDICT)).status_code == 200
    assert counter._value.get() == before + 1
    assert metrics.KEY_REQUESTS.labels("none", "/predict", "401")._value.get() >= 1
    exposition = metrics.exposition()[0].decode()
    assert PREDICT not in exposition
    assert 'key_id="app"' in exposition


def test_the_keys_file_is_reloaded_when_it_changes(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(keys, "RELOAD_CHECK_S", 0.0)
    path = tmp_path / "keys.txt"
    path.write_text(f"app:{digest(PREDICT)}:predict\n")
    key_file = KeyFile(path)
    assert key_file.find(PREDICT).id == "app"
    assert key_file.find(READ) is None
    path.write_text(f"dashboard:{digest(READ)}:read\n")
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
    assert key_file.find(READ).id == "dashboard"
    assert key_file.find(PREDICT) is None
    path.write_text("garbage\n")  # a broken file keeps the keys in force
    os.utime(path, ns=(time.time_ns() + 2 * 10**9,) * 2)
    assert key_file.find(READ).id == "dashboard"
    path.unlink()
    assert key_file.find(READ).id == "dashboard"
    assert any("no valid key" in r.message for r in caplog.records)


def test_a_keys_file_without_a_valid_key_refuses_to_start(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"app:{PREDICT}:predict\n")  # a plaintext key, not its digest
    with pytest.raises(KeyFileError):
        KeyFile(path)
    with pytest.raises(KeyFileError):
        KeyFile(tmp_path / "missing.txt")


def test_the_cli_makes_a_key_whose_line_works(tmp_path, capsys):
    path = tmp_path / "keys.txt"
    assert keys.main(["ci-runner", "--scopes", "predict,read", "--append", str(path)]) == 0
    out = capsys.readouterr().out
    key = out.split("key:")[1].split()[0]
    line = out.split("line:")[1].strip()
    assert path.read_text() == line + "\n"
    assert key not in line
    assert KeyFile(path).find(key).scopes == {"predict", "read"}
    with pytest.raises(SystemExit):
        keys.main(["x", "--scopes", "root"])
