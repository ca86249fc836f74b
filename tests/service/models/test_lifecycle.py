"""Live model lifecycle in one process: versions that appear, change, fail and disappear;
serving.json rules; model control; two registries sharing one control record."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import weakref
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from service import metrics
from service.app import create_app
from service.models.control import ControlStore
from service.models.lifecycle import Lifecycle
from service.models.policy import NOT_LOADED_EXPLICIT
from service.models.registry import Registry
from service.settings import Settings
from tests.helpers import MODELS

POINT = {"instances": [[0.1, 0.2]]}


def publish(
    repo: Path, name: str, version: int, source: str = "circles", edit=None, source_version: int = 1
) -> Path:
    """Copy a committed model version as ``name`` v``version``, finished in a hidden folder
    and renamed into place, as training publishes."""
    staging = repo / name / f".staging-{version}"
    staging.parent.mkdir(exist_ok=True)
    shutil.copytree(MODELS / source / str(source_version), staging)
    meta = json.loads((staging / "metadata.json").read_text())
    meta.update(name=name, version=version)
    if edit:
        edit(meta, staging)
    (staging / "metadata.json").write_text(json.dumps(meta))
    final = repo / name / str(version)
    os.rename(staging, final)
    return final


def serving_json(repo: Path, name: str, rules: dict | str) -> None:
    text = rules if isinstance(rules, str) else json.dumps(rules)
    (repo / name / "serving.json").write_text(text)


@pytest.fixture
def repo(tmp_path) -> Path:
    publish(tmp_path, "circles", 1)
    publish(tmp_path, "blobs", 1, source="blobs")
    return tmp_path


@pytest.fixture
def app(repo):
    return create_app(
        Settings.from_env({}, model_repository=repo, default_model="circles", poll_interval_s=0)
    )


def serving(app):
    return app.extensions["serving"]


def predict_version(client, path="/models/circles/predict", **query) -> tuple[int, dict]:
    response = client.post(path, json=POINT, query_string=query)
    return response.status_code, response.get_json()


def test_a_new_version_is_loaded_warmed_and_then_served(app, repo):
    client = app.test_client()
    assert predict_version(client)[1]["model"]["version"] == 1
    publish(repo, "circles", 2)
    assert predict_version(client)[1]["model"]["version"] == 1  # not before a check
    serving(app).lifecycle.refresh()
    status, body = predict_version(client)
    assert (status, body["model"]["version"]) == (200, 2)
    entry = serving(app).registry.version("circles", 2)
    assert entry.loaded
    assert entry.predictor.ready
    versions = client.get("/models/circles").get_json()["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [(1, "loaded"), (2, "loaded")]


def test_a_removed_version_finishes_its_requests_then_its_session_is_released(app, repo, caplog):
    publish(repo, "circles", 2)
    lifecycle, registry = serving(app).lifecycle, serving(app).registry
    lifecycle.refresh()
    in_flight = registry.version("circles", 2)  # a request that resolved v2 and is still running
    shutil.rmtree(repo / "circles" / "2")
    with caplog.at_level(logging.INFO, logger="service.models.loader"):
        lifecycle.refresh()
        client = app.test_client()
        status, _body = predict_version(client, "/models/circles/versions/2/predict")
        assert status == 404
        assert predict_version(client)[1]["model"]["version"] == 1
        logits = in_flight.predictor.predict(np.zeros((1, 2), np.float32))
        assert logits.shape == (1, 1)  # the in-flight request still finishes
        # (checked on the session itself: another test's app may release its own v2 now)
        session = weakref.ref(in_flight.predictor)
        assert session() is not None
        del in_flight
        gc.collect()
        assert session() is None
        gc.collect()
        assert any("released model circles v2" in r.message for r in caplog.records)
    assert ("circles", 2) not in [e.ref for e in registry.entries]


def test_changed_files_reload_and_touched_files_do_not(app, repo):
    lifecycle, registry = serving(app).lifecycle, serving(app).registry
    before = registry.version("circles", 1)
    path = repo / "circles" / "1" / "metadata.json"
    stamp = path.stat().st_mtime_ns + 5_000_000
    os.utime(path, ns=(stamp, stamp))  # same bytes, new time
    lifecycle.refresh()
    assert registry.version("circles", 1) is before
    meta = json.loads(path.read_text())
    meta["description"] = "retrained with more data"
    path.write_text(json.dumps(meta))
    os.utime(path, ns=(stamp + 5_000_000, stamp + 5_000_000))
    lifecycle.refresh()
    after = registry.version("circles", 1)
    assert after is not before
    assert after.metadata["description"] == "retrained with more data"


def test_a_corrupt_new_version_is_reported_and_the_old_one_keeps_serving(app, repo):
    client = app.test_client()
    failures = metrics.MODEL_LOAD_FAILURES.labels("circles", "2")
    failed_before = failures._value.get()

    def corrupt(meta, folder):
        (folder / "model.onnx").write_bytes(b"not an onnx file")

    publish(repo, "circles", 2, edit=corrupt)
    serving(app).lifecycle.refresh()
    status, body = predict_version(client)
    assert (status, body["model"]["version"]) == (200, 1)
    versions = {v["version"]: v for v in client.get("/models/circles").get_json()["versions"]}
    assert versions[2]["status"] == "failed"
    assert "sha256" in versions[2]["error"]
    assert "circles/2/model.onnx" in versions[2]["error"]
    assert str(repo) not in versions[2]["error"]  # paths inside the repository only
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert "failed to load: circles v2" in ready.get_json()["reason"]
    assert failures._value.get() == failed_before + 1
    serving(app).lifecycle.refresh()  # unchanged files: not retried
    assert failures._value.get() == failed_before + 1


def test_changed_files_that_fail_keep_the_previous_session_with_a_notice(app, repo):
    registry = serving(app).registry
    before = registry.version("circles", 1)
    (repo / "circles" / "1" / "model.onnx").write_bytes(b"half-copied")
    serving(app).lifecycle.refresh()
    assert registry.version("circles", 1) is before
    assert "failed to load" in before.notice
    view = app.test_client().get("/models/circles").get_json()["versions"][0]
    assert view["status"] == "loaded"
    assert "serving the previous ones" in view["notice"]


def test_version_policy_latest_serves_the_highest_and_says_why_not_the_rest(app, repo):
    client = app.test_client()
    publish(repo, "circles", 2)
    publish(repo, "circles", 3)
    serving_json(repo, "circles", {"version_policy": {"latest": 2}})
    serving(app).lifecycle.refresh()
    versions = {v["version"]: v for v in client.get("/models/circles").get_json()["versions"]}
    assert [versions[v]["status"] for v in (1, 2, 3)] == ["unloaded", "loaded", "loaded"]
    assert versions[1]["error"] == "version policy latest 2"
    status, body = predict_version(client, "/models/circles/versions/1/predict")
    assert status == 404
    assert "not served" in body["error"]["message"]
    serving_json(repo, "circles", {"version_policy": {"specific": [1]}})
    serving(app).lifecycle.refresh()
    assert [e.version for e in serving(app).registry.model("circles").served] == [1]


def test_labels_work_in_every_protocol(app, repo):
    client = app.test_client()
    publish(repo, "circles", 2)
    serving_json(repo, "circles", {"labels": {"stable": 1, "canary": 2}})
    serving(app).lifecycle.refresh()
    assert predict_version(client, version="stable")[1]["model"]["version"] == 1
    assert (
        predict_version(client, "/models/circles/versions/canary/predict")[1]["model"]["version"]
        == 2
    )
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}]}
    v2 = client.post("/v2/models/circles/versions/stable/infer", json=body).get_json()
    assert v2["model_version"] == "1"
    tf = client.post("/v1/models/circles/labels/canary:predict", json={"instances": [[0.1, 0.2]]})
    assert tf.status_code == 200
    status = client.get("/v1/models/circles/labels/stable").get_json()
    assert status["model_version_status"][0]["version"] == "1"
    assert client.get("/v1/models/circles/labels/nope").status_code == 404
    assert client.get("/v1/models/circles/versions/stable").status_code == 404  # numbers only
    unknown = predict_version(client, version="beta")
    assert unknown[0] == 404
    assert "label 'beta'" in unknown[1]["error"]["message"]
    view = client.get("/models/circles").get_json()
    assert view["serving"]["labels"] == {"stable": 1, "canary": 2}
    assert [v["labels"] for v in view["versions"]] == [["stable"], ["canary"]]


def test_weights_route_unversioned_requests_in_proportion(app, repo):
    publish(repo, "circles", 2)
    serving_json(repo, "circles", {"labels": {"canary": 2}, "weights": {"1": 9, "canary": 1}})
    serving(app).lifecycle.refresh()
    registry = serving(app).registry
    picks = Counter(registry.version("circles", servable=False).version for _ in range(20_000))
    assert abs(picks[2] / 20_000 - 0.1) < 0.01
    client = app.test_client()
    seen = Counter(predict_version(client)[1]["model"]["version"] for _ in range(300))
    assert set(seen) == {1, 2}
    assert seen[1] > seen[2]
    assert predict_version(client, version=2)[1]["model"]["version"] == 2  # named: no weights
    view = client.get("/models/circles").get_json()
    assert [v["weight"] for v in view["versions"]] == [0.9, 0.1]
    assert metrics.MODEL_WEIGHT.labels("circles", "2")._value.get() == pytest.approx(0.1)


def test_a_bad_serving_json_is_reported_and_the_rules_in_force_stay(app, repo):
    publish(repo, "circles", 2)
    serving_json(repo, "circles", {"labels": {"stable": 1}})
    serving(app).lifecycle.refresh()
    for bad, why in (
        ("{not json", "not valid JSON"),
        ({"version_policy": {"latest": 0}}, "version_policy"),
        ({"weights": {"beta": 1}}, "neither a version number nor a label"),
        ({"labels": {"2x": 1}}, "labels"),
    ):
        serving_json(repo, "circles", bad)
        serving(app).lifecycle.refresh()
        view = app.test_client().get("/models/circles").get_json()
        assert why in view["serving"]["problems"][0], bad
        assert view["serving"]["labels"] == {"stable": 1}
        ready = app.test_client().get("/health/ready").get_json()
        assert "serving.json" in ready["reason"]


def test_unload_and_load_through_the_native_and_v2_apis(app, repo):
    client = app.test_client()
    body = client.post("/models/blobs/unload").get_json()
    assert [v["status"] for v in body["versions"]] == ["unloaded"]
    assert "model-control API" in body["versions"][0]["error"]
    status, _error = predict_version(client, "/models/blobs/predict")
    assert status == 404
    serving(app).lifecycle.refresh()  # a poll does not bring it back
    assert predict_version(client, "/models/blobs/predict")[0] == 404
    index = client.post("/v2/repository/index", json={}).get_json()
    assert {
        "name": "blobs",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded through the model-control API",
    } in index
    assert client.post("/v2/repository/models/blobs/load").get_json() == {}
    assert client.post("/models/blobs/predict", json={"instances": [[0.0, 0.0]]}).status_code == 200
    assert client.post("/v2/repository/models/blobs/unload", json={}).status_code == 200
    assert client.post("/models/blobs/load").get_json()["versions"][0]["status"] == "loaded"
    assert client.post("/models/nothing/load").status_code == 404
    assert client.post("/v2/repository/models/nothing/load").status_code == 404
    bad = client.post("/v2/repository/models/blobs/load", json={"force": True})
    assert bad.status_code == 400
    assert "force" in bad.get_json()["error"]


def test_a_load_where_nothing_loads_says_why(app, repo):
    def corrupt(meta, folder):
        (folder / "model.onnx").write_bytes(b"broken")

    publish(repo, "broken", 1, edit=corrupt)
    client = app.test_client()
    native = client.post("/models/broken/load")
    assert native.status_code == 422
    assert "sha256" in native.get_json()["error"]["details"]["1"]
    v2 = client.post("/v2/repository/models/broken/load")
    assert v2.status_code == 400
    assert "failed to load 'broken'" in v2.get_json()["error"]


def test_explicit_mode_reads_the_repository_only_when_told(repo):
    app = create_app(
        Settings.from_env(
            {},
            model_repository=repo,
            default_model="circles",
            poll_interval_s=1,
            model_control="explicit",
        )
    )
    lifecycle, client = serving(app).lifecycle, app.test_client()
    assert lifecycle.interval == 0  # nothing to watch in one process
    publish(repo, "circles", 2)
    lifecycle.refresh()
    assert predict_version(client)[1]["model"]["version"] == 1
    assert serving(app).registry.version("circles", 2, servable=False).status == "unloaded"
    client.post("/v2/repository/models/circles/load")
    assert predict_version(client)[1]["model"]["version"] == 2


def test_explicit_mode_indexes_a_model_added_since_the_start_and_loads_it(repo):
    """The index is every model in the repository, loaded or not: it is how a client in
    explicit mode finds what it can load."""
    app = create_app(
        Settings.from_env(
            {}, model_repository=repo, default_model="circles", model_control="explicit"
        )
    )
    client = app.test_client()
    publish(repo, "digits", 1, source="digits")
    (repo / ".staging-x").mkdir()  # hidden folders are not models
    index = client.post("/v2/repository/index", json={}).get_json()
    assert [m["name"] for m in index] == ["blobs", "circles", "digits"]
    assert index[2] == {"name": "digits", "state": "UNAVAILABLE", "reason": NOT_LOADED_EXPLICIT}
    ready = client.post("/v2/repository/index", json={"ready": True}).get_json()
    assert [m["name"] for m in ready] == ["blobs", "circles"]
    assert client.post("/v2/repository/models/digits/load").get_json() == {}
    index = client.post("/v2/repository/index", json={}).get_json()
    assert {"name": "digits", "version": "1", "state": "READY", "reason": ""} in index


def test_two_workers_follow_one_control_record(repo, tmp_path):
    """Two registries sharing a control folder stand in for two gunicorn workers."""
    folder = tmp_path / "runtime"
    settings = Settings.from_env(
        {}, model_repository=repo, default_model="circles", poll_interval_s=0
    )
    workers = []
    for _ in range(2):
        registry = Registry(settings)
        lifecycle = Lifecycle(settings, registry, ControlStore(folder))
        lifecycle.start(watch=False)
        workers.append((registry, lifecycle))
    (a_registry, a), (b_registry, b) = workers
    assert a.interval == 1.0  # the control record is checked every second
    a.unload("blobs")
    assert a_registry.version("blobs", 1, servable=False).status == "unloaded"
    assert b_registry.version("blobs", 1, servable=False).loaded
    b.tick()
    assert b_registry.version("blobs", 1, servable=False).status == "unloaded"
    late = Registry(settings)  # a worker that (re)starts now comes up in the current state
    Lifecycle(settings, late, ControlStore(folder)).start(watch=False)
    assert late.version("blobs", 1, servable=False).status == "unloaded"
    b.load("blobs")
    a.tick()
    assert a_registry.version("blobs", 1, servable=False).loaded


def _workers(repo, folder, n=2, **overrides):
    """``n`` registries sharing one control folder: stand-ins for gunicorn workers."""
    overrides = {"poll_interval_s": 1, **overrides}  # (no watcher thread: tick() by hand)
    settings = Settings.from_env({}, model_repository=repo, default_model="circles", **overrides)
    workers = []
    for _ in range(n):
        registry = Registry(settings)
        lifecycle = Lifecycle(settings, registry, ControlStore(folder))
        lifecycle.start(watch=False)
        workers.append((registry, lifecycle))
    return workers


def test_a_worker_busy_with_one_model_still_catches_up_on_the_others(repo, tmp_path):
    publish(repo, "digits", 1, source="digits")
    # interval 0: workers follow the control record only, model by model
    (_, a), (b_registry, b) = _workers(repo, tmp_path / "runtime", poll_interval_s=0)
    a.unload("blobs")  # worker a records an unload ...
    b.load("digits")  # ... while worker b answers a load of another model
    assert b_registry.version("blobs", 1, servable=False).loaded  # b has not looked at blobs yet
    b.tick()
    assert (
        b_registry.version("blobs", 1, servable=False).status == "unloaded"
    )  # and is not fooled into skipping it


def test_explicit_mode_workers_follow_a_load_even_with_the_same_versions(repo, tmp_path):
    (a_registry, a), (b_registry, b) = _workers(
        repo, tmp_path / "runtime", model_control="explicit"
    )
    publish(repo, "circles", 2)
    a.tick()
    b.tick()
    assert b_registry.version("circles", servable=False).version == 1  # not until a load
    a.load("circles")
    b.tick()
    assert b_registry.version("circles", servable=False).version == 2
    late = Registry(a_registry.settings)  # a restarted worker: the recorded versions
    publish(repo, "circles", 3)
    Lifecycle(a_registry.settings, late, ControlStore(tmp_path / "runtime")).start(watch=False)
    assert [e.version for e in late.model("circles").served] == [1, 2]


def test_a_load_anywhere_retries_versions_that_failed_with_the_same_files(
    repo, tmp_path, monkeypatch
):
    from service.models.predictor import OnnxPredictor

    (a_registry, a), (b_registry, b) = _workers(repo, tmp_path / "runtime")
    real_load = OnnxPredictor.load

    def out_of_memory(self):
        raise MemoryError("no room for the session")

    monkeypatch.setattr(OnnxPredictor, "load", out_of_memory)
    publish(repo, "circles", 2)
    a.tick()
    b.tick()
    assert b_registry.version("circles", 2, servable=False).status == "failed"
    monkeypatch.setattr(OnnxPredictor, "load", real_load)
    b.tick()
    assert (
        b_registry.version("circles", 2, servable=False).status == "failed"
    )  # same files: not retried
    a.load("circles")
    assert a_registry.version("circles", 2, servable=False).loaded
    b.tick()
    assert b_registry.version("circles", 2, servable=False).loaded  # the load reached b too


def test_a_restarted_worker_follows_a_later_load(repo, tmp_path):
    (_, a), (_, b) = _workers(repo, tmp_path / "runtime")
    a.unload("blobs")
    ((late_registry, late),) = _workers(repo, tmp_path / "runtime", n=1)
    assert late_registry.version("blobs", 1, servable=False).status == "unloaded"
    b.load("blobs")
    late.tick()
    assert late_registry.version("blobs", 1, servable=False).loaded


def test_the_default_model_cannot_be_unloaded(app):
    response = app.test_client().post("/models/circles/unload")
    assert response.status_code == 409
    assert "default model" in response.get_json()["error"]["message"]
    v2 = app.test_client().post("/v2/repository/models/circles/unload")
    assert v2.status_code == 409
    assert serving(app).registry.version("circles").loaded


def test_weights_that_cannot_be_shares_are_refused(app, repo):
    publish(repo, "circles", 2)
    for weights in ({"1": 1e308, "2": 1e308}, {"1": 0, "2": 0}, '{"weights": {"1": 1e999}}'):
        rules = weights if isinstance(weights, str) else {"weights": weights}
        serving_json(repo, "circles", rules)
        serving(app).lifecycle.refresh()
        problems = app.test_client().get("/models/circles").get_json()["serving"]["problems"]
        assert "weight" in problems[0], weights
    serving_json(repo, "circles", {"weights": {"1": 1e-320, "2": 1e300}})
    serving(app).lifecycle.refresh()
    assert {
        serving(app).registry.version("circles", servable=False).version for _ in range(50)
    } == {2}


def test_labels_written_as_floats_are_versions(app, repo):
    publish(repo, "circles", 2)
    serving_json(repo, "circles", '{"labels": {"stable": 2.0}}')
    serving(app).lifecycle.refresh()
    status = app.test_client().get("/v1/models/circles/labels/stable").get_json()
    assert status["model_version_status"][0]["version"] == "2"


def test_a_folder_that_cannot_be_read_keeps_what_it_served(app, repo, monkeypatch):
    from service.models import repository

    real = repository.os.scandir

    def scandir(path):
        if Path(path).name == "circles":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(repository.os, "scandir", scandir)
    serving(app).lifecycle.refresh()
    assert serving(app).registry.version("circles", 1).loaded


def test_one_models_failure_does_not_hold_up_the_others(app, repo, monkeypatch, caplog):
    lifecycle = serving(app).lifecycle
    real = Lifecycle._model

    def broken(self, name, *args):
        if name == "blobs":
            raise RuntimeError("a bug")
        return real(self, name, *args)

    monkeypatch.setattr(Lifecycle, "_model", broken)
    publish(repo, "circles", 2)
    lifecycle.refresh()
    assert serving(app).registry.version("circles", servable=False).version == 2
    assert serving(app).registry.version("blobs", 1).loaded
    assert any("model blobs: check failed" in r.message for r in caplog.records)


def test_folders_that_name_no_version_are_reported(app, repo):
    shutil.copytree(repo / "circles" / "1", repo / "circles" / "007")
    serving(app).lifecycle.refresh()
    problems = app.test_client().get("/models/circles").get_json()["serving"]["problems"]
    assert problems == [
        "folder '007' is not a version number (1, 2, ... without leading zeros): ignored"
    ]


def test_sessions_share_one_cpu_arena_per_process():
    """Many models: each session draws from the process's one CPU arena (bench/scaling.py
    measured 177 -> 136 MB for 100 versions), registered once however many load."""
    import onnxruntime as ort

    from service.models import predictor

    first, second = ort.SessionOptions(), ort.SessionOptions()
    predictor.share_cpu_arena(first)
    predictor.share_cpu_arena(second)  # a second registration would raise
    assert predictor._arena_registered is True
    for options in (first, second):
        assert options.get_session_config_entry("session.use_env_allocators") == "1"
