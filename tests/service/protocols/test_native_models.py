"""GET /models*, /health/*, /openapi.json, /docs, and how failing models are reported."""

import contextlib
import json
import logging
import shutil

import pytest

from service.app import create_app
from service.settings import Settings
from tests.helpers import MODELS
from tests.service.models.test_lifecycle import publish


def test_models_lists_every_model_with_status_and_provider(client):
    body = client.get("/models").get_json()
    assert body["default_model"] == "fashion-mnist"
    names = [m["name"] for m in body["models"]]
    assert names == sorted(names)
    assert {"circles", "blobs", "digits", "fashion-mnist"} <= set(names)
    fashion = next(m for m in body["models"] if m["name"] == "fashion-mnist")
    assert fashion["default"] is True
    version = fashion["versions"][0]
    assert version["status"] == "loaded"
    assert version["provider"] == "CPUExecutionProvider"
    assert version["classes"][7] == "Sneaker"
    assert version["input"] == {"name": "input", "shape": [None, 28, 28, 1], "dtype": "float32"}
    assert version["preprocessing"]["invert_light_background"] is True
    assert version["metrics"]["accuracy"] >= 0.925
    assert "metadata" not in version


def test_model_and_version_detail(client):
    model = client.get("/models/circles").get_json()
    assert model["latest_version"] == 1
    assert model["versions"][0]["task"] == "binary"
    detail = client.get("/models/circles/versions/1").get_json()
    assert detail["metadata"]["export"]["opset"] >= 17
    assert detail["metadata"]["classes"] == ["outer", "inner"]
    assert client.get("/models/nope").status_code == 404
    assert client.get("/models/circles/versions/3").get_json()["error"]["code"] == (
        "version_not_found"
    )


def test_a_versions_report_files_are_listed_and_served(client):
    detail = client.get("/models/circles/versions/1").get_json()
    on_disk = sorted(p.name for p in (MODELS / "circles" / "1" / "report").iterdir())
    assert detail["report"] == on_disk
    assert {"reliability.png", "training_curves.png", "README.md"} <= set(on_disk)
    assert "report" not in client.get("/models").get_json()["models"][0]["versions"][0]
    r = client.get("/models/circles/versions/1/report/reliability.png")
    assert (r.status_code, r.mimetype) == (200, "image/png")
    assert r.data == (MODELS / "circles" / "1" / "report" / "reliability.png").read_bytes()
    r = client.get("/models/circles/versions/1/report/README.md")
    assert r.mimetype == "text/markdown"
    assert b"circles" in r.data
    for bad in ("model.onnx", "..%2Fmetadata.json", "%2E%2E", "nothing.png", ".hidden.png"):
        r = client.get(f"/models/circles/versions/1/report/{bad}")
        assert r.status_code == 404, bad
        assert r.get_json()["error"]["code"] == "not_found"
    assert client.get("/models/circles/versions/9/report/reliability.png").status_code == 404


def test_a_report_symlink_is_followed_only_to_a_file_beside_it(tmp_path):
    version = publish(tmp_path, "circles", 1)
    publish(tmp_path, "blobs", 1, source="blobs")
    report = version / "report"
    (tmp_path / "secret.md").write_text("outside the repository")
    outside = {
        "absolute.md": tmp_path / "secret.md",
        "relative.md": "../../../secret.md",
        "passwd.md": "/etc/passwd",
        "weights.png": "../model.onnx",  # in the version folder, but not a report file
        "metadata.json": "../metadata.json",
        "other-model.png": tmp_path / "blobs" / "1" / "report" / "reliability.png",
        "dangling.png": "nothing.png",
    }
    for name, target in outside.items():
        (report / name).symlink_to(target)
    (report / "latest.png").symlink_to("reliability.png")  # stays in report/: served
    publish(tmp_path, "circles", 2)
    shutil.rmtree(version.parent / "2" / "report")
    (version.parent / "2" / "report").symlink_to(tmp_path / "blobs" / "1" / "report")
    settings = Settings.from_env({}, model_repository=tmp_path, poll_interval_s=0)
    client = create_app(settings).test_client()

    listed = client.get("/models/circles/versions/1").get_json()["report"]
    assert {"latest.png", "reliability.png"} <= set(listed)
    assert not set(outside) & set(listed)
    for name in outside:
        r = client.get(f"/models/circles/versions/1/report/{name}")
        assert (r.status_code, r.get_json()["error"]["code"]) == (404, "not_found"), name
        assert b"outside the repository" not in r.data
        assert b"root:" not in r.data
    r = client.get("/models/circles/versions/1/report/latest.png")
    assert (r.status_code, r.mimetype) == (200, "image/png")
    assert r.data == (report / "reliability.png").read_bytes()
    # A report folder that is itself a link to another model's: nothing in it is served.
    assert client.get("/models/circles/versions/2").get_json()["report"] == []
    assert client.get("/models/circles/versions/2/report/reliability.png").status_code == 404
    assert client.get("/models/blobs/versions/1/report/reliability.png").status_code == 200


def test_console_page_and_its_files(client):
    for path in ("/", "/console"):
        r = client.get(path)
        assert (r.status_code, r.mimetype) == (200, "text/html")
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert b'src="/console/assets/console.js"' in r.data
    assert client.get("/console/assets/console.css").mimetype == "text/css"
    assert client.get("/console/assets/index.html").status_code == 404
    assert client.get("/console/assets/..%2F..%2Fapp.py").status_code == 404


def test_health(client):
    assert client.get("/health/live").get_json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready"
    assert body["models"]["circles/1"] == "loaded"


def test_openapi_document_and_swagger_ui(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/predict",
        "/models/{model}/predict",
        "/models/{model}/versions/{version}/predict",
        "/models",
        "/models/{model}",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/v2/models/{model}/infer",
        "/v1/models/{model}:predict",
    ):
        assert path in spec["paths"], path
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png"} <= set(body)
    assert "PredictResponse" in spec["components"]["schemas"]
    assert "422" in spec["paths"]["/predict"]["post"]["responses"]
    error = spec["components"]["schemas"]["ApiError"]
    assert set(error["required"]) == {"error", "request_id"}  # what every native error carries
    page = client.get("/docs").get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in page
    with client.get("/docs/assets/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
        assert len(asset.data) > 100_000


def _policy(response) -> dict[str, str]:
    directives = response.headers["Content-Security-Policy"].split("; ")
    return dict(d.split(" ", 1) for d in directives)


def test_docs_and_the_console_are_never_framed_and_load_only_the_services_files(client):
    docs, console = client.get("/docs"), client.get("/")
    for page in (docs, console):
        policy = _policy(page)
        assert policy["frame-ancestors"] == "'none'"
        assert (policy["default-src"], policy["script-src"]) == ("'none'", "'self'")
        assert (policy["base-uri"], policy["form-action"]) == ("'none'", "'none'")
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    docs_policy = _policy(docs)
    assert docs_policy["style-src"] == "'self'"  # no 'unsafe-inline' anywhere
    assert docs_policy["img-src"] == "'self' data: blob:"
    assert docs_policy["connect-src"] == "'self'"
    assert "media-src" not in docs_policy  # the console's camera only
    assert _policy(console)["media-src"] == "'self' blob:"
    init = client.get("/docs/assets/docs-init.js")
    assert b"validatorUrl: null" in init.data  # no badge image from validator.swagger.io
    css = client.get("/docs/assets/swagger-ui.css")
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/docs/assets/favicon-32x32.png").mimetype == "image/png"


def _break(repo, name, how):
    vdir = repo / name / "1"
    if how == "checksum":
        (vdir / "model.onnx").write_bytes((vdir / "model.onnx").read_bytes() + b"\0")
    elif how == "metadata":
        meta = json.loads((vdir / "metadata.json").read_text())
        del meta["classes"]
        (vdir / "metadata.json").write_text(json.dumps(meta))
    elif how == "onnx":
        from service.contract.metadata import sha256_file

        (vdir / "model.onnx").write_bytes(b"not a model")
        meta = json.loads((vdir / "metadata.json").read_text())
        meta["export"]["onnx_sha256"] = sha256_file(vdir / "model.onnx")
        (vdir / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("checksum", "has sha256"),
        ("metadata", "'classes' is a required property"),
        ("onnx", "InvalidProtobuf"),
    ],
)
def test_a_failing_model_is_reported_and_the_others_serve(scratch_repo, how, reason):
    _break(scratch_repo, "circles", how)
    settings = Settings.from_env({}, model_repository=scratch_repo, default_model="blobs")
    client = create_app(settings).test_client()
    version = client.get("/models/circles").get_json()["versions"][0]
    assert version["status"] == "failed"
    assert reason in version["error"]
    assert version["provider"] is None
    r = client.post("/predict?model=circles", json={"instance": [0, 0]})
    assert r.status_code == 503
    assert r.get_json()["error"]["code"] == "model_unavailable"
    assert client.post("/predict", json={"instance": [5, -2]}).status_code == 200  # blobs
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert "failed to load: circles v1" in ready.get_json()["reason"]
    assert ready.get_json()["models"]["circles/1"] == "failed"


def test_not_ready_when_the_default_model_failed(scratch_repo):
    _break(scratch_repo, "circles", "checksum")
    settings = Settings.from_env({}, model_repository=scratch_repo, default_model="circles")
    ready = create_app(settings).test_client().get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "not_ready"
    assert "default model" in ready.get_json()["reason"]


@contextlib.contextmanager
def lifecycle_log(caplog):
    """The lifecycle's records (the service's loggers do not propagate to caplog's)."""
    logger = logging.getLogger("service.models.lifecycle")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="service.models.lifecycle"):
            yield
    finally:
        logger.removeHandler(caplog.handler)


def test_without_the_configured_default_the_only_model_is_the_default(scratch_repo, caplog):
    """The repository lacks fashion-mnist (the setting's default): with one model, that
    model answers requests that name none, and the instance is ready."""
    import shutil

    shutil.rmtree(scratch_repo / "blobs")
    settings = Settings.from_env({}, model_repository=scratch_repo)
    assert settings.default_model == "fashion-mnist"
    with lifecycle_log(caplog):
        client = create_app(settings).test_client()
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert "'fashion-mnist' is not in the repository" in ready.get_json()["reason"]
    said = {r.getMessage() for r in caplog.records if "default model" in r.getMessage()}
    assert said == {
        "default model: circles (the repository's only model; "
        "'fashion-mnist' is not in the repository)"
    }
    body = client.post("/predict", json={"instance": [0.0, 0.9]}).get_json()
    assert (body["model"]["name"], body["model"]["version"]) == ("circles", 1)
    listing = client.get("/models").get_json()
    assert listing["default_model"] == "circles"
    assert [m["default"] for m in listing["models"]] == [True]


def test_without_a_default_several_models_are_ready_and_requests_name_one(scratch_repo, caplog):
    settings = Settings.from_env({}, model_repository=scratch_repo)
    with lifecycle_log(caplog):
        client = create_app(settings).test_client()
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["models"] == {"blobs/1": "loaded", "circles/1": "loaded"}
    assert any("no default model" in r.getMessage() for r in caplog.records)
    r = client.post("/predict", json={"instance": [0.0, 0.9]})
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert "name a model" in error["message"]
    assert "'fashion-mnist' is not in the repository" in error["message"]
    assert error["details"]["available"] == ["blobs", "circles"]
    assert client.get("/models").get_json()["default_model"] is None
    ok = client.post("/predict?model=blobs", json={"instance": [5, -2]})
    assert ok.status_code == 200


def test_not_ready_without_a_repository(tmp_path):
    settings = Settings.from_env({}, model_repository=tmp_path / "missing")
    client = create_app(settings).test_client()
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert "does not exist" in ready.get_json()["reason"]
    assert client.get("/health/live").status_code == 200


def test_versions_served_side_by_side(scratch_repo):
    import shutil

    shutil.copytree(scratch_repo / "circles" / "1", scratch_repo / "circles" / "2")
    meta_path = scratch_repo / "circles" / "2" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = 2
    meta_path.write_text(json.dumps(meta))
    client = create_app(Settings.from_env({}, model_repository=scratch_repo)).test_client()
    assert client.get("/models/circles").get_json()["latest_version"] == 2
    r = client.post("/models/circles/predict", json={"instance": [0, 0]})
    assert r.get_json()["model"]["version"] == 2
    r = client.post("/predict?model=circles&version=1", json={"instance": [0, 0]})
    assert r.get_json()["model"]["version"] == 1
