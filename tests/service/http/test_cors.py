"""service.http.cors: SERVING_CORS_ORIGINS, answered by the dispatcher on the route table's
routes: preflights (without an API key), the allow and expose headers on answers, nothing for
an origin not listed, nothing at all by default."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.http.cors import ALLOW_HEADERS, EXPOSE_HEADERS, Cors
from service.keys import digest
from service.settings import Settings, SettingsError

APP_ORIGIN = "https://app.example.com"
CIRCLES = {"instances": [[0.0, 0.05]]}
PREDICT_KEY = "ksk_browser-predict-key"
PREFLIGHT = {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"}


def _cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-")}


@pytest.fixture(scope="module")
def browser(settings):
    app = create_app(
        settings, cors_origins=(APP_ORIGIN, "http://localhost:3000/"), poll_interval_s=0
    )
    return app.test_client()


def test_cors_is_off_by_default(client, settings):
    assert settings.cors_origins == ()
    assert client.application.wsgi_app.cors is None
    r = client.options("/predict", headers=PREFLIGHT)
    assert (r.status_code, r.headers["Allow"]) == (204, "POST")
    assert _cors_headers(r) == {}
    r = client.post("/predict?model=circles", json=CIRCLES, headers={"Origin": APP_ORIGIN})
    assert r.status_code == 200
    assert _cors_headers(r) == {}
    assert "Vary" not in r.headers


def test_a_preflight_from_an_allowed_origin(browser):
    r = browser.options("/predict", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x"})
    assert (r.status_code, r.data) == (204, b"")
    assert _cors_headers(r) == {
        "Access-Control-Allow-Origin": APP_ORIGIN,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": "600",
        "Access-Control-Expose-Headers": EXPOSE_HEADERS,
    }
    assert r.headers["Vary"] == "Origin"
    allowed = {h.strip() for h in ALLOW_HEADERS.split(",")}
    assert {"Content-Type", "Authorization", "X-API-Key", "X-Request-ID"} <= allowed
    assert "Inference-Header-Content-Length" in allowed
    r = browser.options("/models/circles", headers={**PREFLIGHT, "Origin": "http://localhost:3000"})
    assert r.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_answers_to_an_allowed_origin_carry_the_allow_and_expose_headers(browser):
    r = browser.post("/predict?model=circles", json=CIRCLES, headers={"Origin": APP_ORIGIN})
    assert r.status_code == 200
    assert _cors_headers(r) == {
        "Access-Control-Allow-Origin": APP_ORIGIN,
        "Access-Control-Expose-Headers": "X-Request-ID, Inference-Header-Content-Length",
    }
    assert r.headers["Vary"] == "Origin"
    r = browser.post("/v2/models/nope/infer", json={}, headers={"Origin": APP_ORIGIN})
    assert r.status_code == 404  # errors too: the page can read why
    assert r.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_an_origin_not_listed_gets_no_cors_headers(browser):
    other = {"Origin": "https://evil.example"}
    r = browser.options("/predict", headers={**PREFLIGHT, **other})
    assert (r.status_code, r.headers["Allow"]) == (204, "POST")
    assert _cors_headers(r) == {}
    r = browser.post("/predict?model=circles", json=CIRCLES, headers=other)
    assert r.status_code == 200
    assert _cors_headers(r) == {}
    assert r.headers["Vary"] == "Origin"  # the answer depends on the Origin: caches must know
    r = browser.post("/predict?model=circles", json=CIRCLES)  # no Origin: not a CORS request
    assert _cors_headers(r) == {}


def test_any_origin(settings):
    client = create_app(settings, cors_origins=("*",), poll_interval_s=0).test_client()
    r = client.options("/v2/models/circles/infer", headers={**PREFLIGHT, "Origin": "https://x.y"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "POST"
    r = client.get("/health/live", headers={"Origin": "https://x.y"})
    assert (r.get_json(), r.headers["Access-Control-Allow-Origin"]) == ({"status": "alive"}, "*")


def test_a_preflight_needs_no_api_key_but_the_request_does(settings, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"browser:{digest(PREDICT_KEY)}:predict\n")
    app = create_app(
        settings, cors_origins=(APP_ORIGIN,), api_keys_file=str(keys), poll_interval_s=0
    )
    client = app.test_client()
    r = client.options("/predict", headers=PREFLIGHT)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Methods"] == "POST"
    r = client.post("/predict?model=circles", json=CIRCLES, headers={"Origin": APP_ORIGIN})
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    r = client.post(
        "/predict?model=circles",
        json=CIRCLES,
        headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {PREDICT_KEY}"},
    )
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_the_setting_parses_origins_and_refuses_what_is_not_one():
    environ = {"SERVING_CORS_ORIGINS": " https://a.example , http://localhost:3000,*"}
    origins = Settings.from_env(environ).cors_origins
    assert origins == ("https://a.example", "http://localhost:3000", "*")
    assert Settings.from_env({"SERVING_CORS_ORIGINS": ""}).cors_origins == ()
    for bad in ("a.example", "https://a.example/path", "https://a.example?x"):
        with pytest.raises(SettingsError, match="SERVING_CORS_ORIGINS"):
            Settings.from_env({"SERVING_CORS_ORIGINS": bad})


def test_the_policy():
    assert Cors.of(()) is None
    assert Cors.of(("",)) is None
    cors = Cors.of(("https://A.example/",))
    assert cors.headers(None) == (("Vary", "Origin"),)
    assert cors.headers("https://a.example")[0] == (
        "Access-Control-Allow-Origin",
        "https://a.example",
    )
    assert cors.headers("https://b.example") == (("Vary", "Origin"),)
    assert cors.preflight("https://b.example", ["POST"]) == ()
    assert cors.preflight("https://a.example", ["GET", "HEAD"])[0] == (
        "Access-Control-Allow-Methods",
        "GET, HEAD",
    )
