"""API keys: the file format, 401/403 in each protocol's shape, scopes per route family,
both header forms, reloading, per-key metrics, and the CLI that makes keys."""

from __future__ import annotations

import pytest

from service import keys, metrics
from service.app import create_app
from service.keys import KeyFile, digest, parse
from service.protocols.routes import ROUTES
from service.settings import Settings
from tests.helpers import MODELS

PREDICT, READ, ADMIN = "ksk_predict-key", "ksk_read-key", "ksk_admin-key"
POINT = {"instances": [[0.1, 0.2]]}
V2_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}]}


def keys_text() -> str:
    return (
        f"# made by tests\napp:{digest(PREDICT)}:predict\n"
        f"dashboard:{digest(READ)}:read   # a comment after a line\n"
        f"ops:{digest(ADMIN)}:admin,read,predict\n"
    )


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(keys_text())
    return path


@pytest.fixture(scope="module")
def client(keys_file):
    settings = Settings.from_env(
        {},
        model_repository=MODELS,
        default_model="circles",
        poll_interval_s=0,
        api_keys_file=str(keys_file),
    )
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


def _path(template: str) -> str:
    return (
        template.replace("{model}", "circles")
        .replace("{version}", "1")
        .replace("{label}", "stable")
        .replace("{filename}", "swagger-ui.css")
    )


SCOPED = [r for r in ROUTES if r.scope not in (None, "metrics")]
HOLDER = {"predict": PREDICT, "read": READ, "admin": ADMIN}


def test_every_route_needing_a_scope_is_checked_in_every_protocol(client):
    assert {r.scope for r in SCOPED} == {"predict", "read", "admin"}
    assert len(SCOPED) >= 38  # every protocol's model, version and label routes
    for route in SCOPED:
        path = _path(route.template)
        anonymous = client.open(path, method=route.method, json={})
        assert anonymous.status_code == 401, (route.method, path)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
        for key in (PREDICT, READ):
            if key != HOLDER.get(route.scope):
                refused = client.open(path, method=route.method, json={}, headers=bearer(key))
                assert refused.status_code == 403, (route.method, path, key)
                assert f"lacks the '{route.scope}' scope" in str(refused.get_json())


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/predict", POINT, 200),
        ("POST", "/models/circles/predict", POINT, 200),
        ("POST", "/v2/models/circles/infer", V2_BODY, 200),
        ("POST", "/v1/models/circles:predict", POINT, 200),
        ("GET", "/models", None, 200),
        ("GET", "/v2/models/circles/versions/1/ready", None, 200),
        ("GET", "/v1/models/circles", None, 200),
        ("GET", "/v2/models/stats", None, 200),
        ("POST", "/v2/repository/index", None, 200),
        ("POST", "/models/circles/load", None, 200),
    ],
)
def test_a_key_with_the_scope_gets_through_with_either_header(client, method, path, body, status):
    scope = next(r.scope for r in SCOPED if r.method == method and _path(r.template) == path)
    proxy = {"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": HOLDER[scope]}
    for headers in (bearer(HOLDER[scope]), {"X-API-Key": HOLDER[scope]}, bearer(ADMIN), proxy):
        response = client.open(path, method=method, json=body, headers=headers)
        assert response.status_code == status, (headers, response.get_json())


def test_health_and_docs_are_open_and_metrics_open_by_default(client):
    for path in (
        "/health/live",
        "/health/ready",
        "/v2/health/live",
        "/v2/health/ready",
        "/openapi.json",
        "/docs",
        "/metrics",
    ):
        assert client.get(path).status_code == 200, path


def test_metrics_can_require_the_read_scope(keys_file):
    app = create_app(
        Settings.from_env(
            {},
            model_repository=MODELS,
            default_model="circles",
            poll_interval_s=0,
            api_keys_file=str(keys_file),
            metrics_auth=True,
        )
    )
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(PREDICT)).status_code == 403
    assert client.get("/metrics", headers=bearer(READ)).status_code == 200


def test_requests_are_counted_by_key_id_never_by_key(client):
    counter = metrics.KEY_REQUESTS.labels("app", "/predict", "200")
    before = counter._value.get()
    assert client.post("/predict", json=POINT, headers=bearer(PREDICT)).status_code == 200
    assert counter._value.get() == before + 1
    refused = metrics.KEY_REQUESTS.labels("dashboard", "/predict", "403")
    before = refused._value.get()
    assert client.post("/predict", json=POINT, headers=bearer(READ)).status_code == 403
    assert refused._value.get() == before + 1  # a 403 is counted under the key that got it
    client.get("/health/live")
    assert metrics.KEY_REQUESTS.labels("none", "/health/live", "200")._value.get() == 0
    assert metrics.KEY_REQUESTS.labels("none", "/predict", "401")._value.get() >= 1
    exposition = metrics.exposition()[0].decode()
    assert PREDICT not in exposition
    assert 'key_id="app"' in exposition


def test_the_keys_file_is_reloaded_and_what_it_says_holds(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(keys, "RELOAD_CHECK_S", 0.0)
    path = tmp_path / "keys.txt"
    path.write_text(f"app:{digest(PREDICT)}:predict\n")
    key_file = KeyFile(path)
    assert key_file.find(PREDICT).id == "app"
    assert key_file.find(READ) is None
    path.write_text(f"dashboard:{digest(READ)}:read\n")  # same size, same second: still seen
    assert key_file.find(READ).id == "dashboard"
    assert key_file.find(PREDICT) is None  # a line removed is a key revoked
    path.write_text("garbage\n")  # nothing valid: nothing passes (fail closed)
    assert key_file.find(READ) is None
    path.write_text(f"dashboard:{digest(READ)}:read\n")
    assert key_file.find(READ).id == "dashboard"
    path.unlink()  # unreadable: nothing passes, said once in the log
    assert key_file.find(READ) is None
    assert key_file.find(READ) is None
    assert sum("cannot be read" in r.message for r in caplog.records) == 1
    assert any("no valid key" in r.message for r in caplog.records)


def test_an_unusable_keys_file_is_named_and_refused_by_everything(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"app:{PREDICT}:predict\n")  # a plaintext key, not its digest
    assert "no valid key (line 1: the digest must be 64 hex" in keys.problem_with(path)
    assert "cannot be read" in keys.problem_with(tmp_path / "missing.txt")
    good = tmp_path / "good.txt"
    good.write_text(keys_text())
    assert keys.problem_with(good) is None
    settings = Settings.from_env(
        {},
        model_repository=MODELS,
        default_model="circles",
        poll_interval_s=0,
        api_keys_file=str(path),
    )
    client = create_app(settings).test_client()
    assert client.post("/predict", json=POINT, headers=bearer(PREDICT)).status_code == 401
    assert client.get("/health/ready").status_code == 200


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


def test_readiness_details_need_the_read_scope(client):
    anonymous = client.get("/health/ready").get_json()
    assert anonymous == {"status": "ready", "reason": "details need an API key with the read scope"}
    detailed = client.get("/health/ready", headers=bearer(READ)).get_json()
    assert "circles/1" in detailed["models"]
