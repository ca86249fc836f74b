"""Roll-outs in one process: held candidates, promotion, shadow comparisons, and /metrics
showing only the versions the rules serve."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.contract.metadata import sha256_file
from service.contract.postprocessing import probabilities
from service.inference.shadow import Shadow
from service.settings import Settings
from tests.helpers import MODELS
from tests.service.models.test_lifecycle import publish, serving_json

RNG = np.random.default_rng(7)
POINTS = RNG.uniform(-1.2, 1.2, size=(400, 2)).round(3)
SHIFT = -15.0  # added to v2's logit: "outer" for a third of these points that v1 calls inner


def shifted(meta, folder, shift=SHIFT):
    """Edit a circles copy: its logit moved by ``shift`` (a model that disagrees near the
    boundary), the checksum renewed."""
    path = folder / "model.onnx"
    model = onnx.load(path)
    bias = next(
        i for i in model.graph.initializer if i.name.endswith("logits_1/Add/ReadVariableOp:0")
    )
    values = onnx.numpy_helper.to_array(bias) + np.float32(shift)
    bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
    onnx.save(model, path)
    meta["export"]["onnx_sha256"] = sha256_file(path)


def logits(folder, points) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: points.astype(np.float32)})[0]


@pytest.fixture
def repo(tmp_path):
    publish(tmp_path, "circles", 1)
    return tmp_path


def make_app(repo, **settings):
    return create_app(
        Settings.from_env(
            {}, model_repository=repo, default_model="circles", poll_interval_s=0, **settings
        )
    )


@pytest.fixture
def app(repo):
    return make_app(repo)


def state(app):
    return app.extensions["serving"]


def answer(client, path="/models/circles/predict", **query) -> int | None:
    response = client.post(path, json={"instances": [[0.1, 0.2]]}, query_string=query)
    return response.get_json()["model"]["version"] if response.status_code == 200 else None


def roles(client, model="circles") -> dict[int, str]:
    versions = client.get(f"/models/{model}").get_json()["versions"]
    return {v["version"]: v["role"] for v in versions}


def test_a_held_version_is_loaded_and_addressable_but_takes_no_unversioned_request(app, repo):
    client = app.test_client()
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1, "canary": 2}})
    publish(repo, "circles", 2)
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(50)} == {1}
    assert answer(client, version="2") == 2
    assert answer(client, version="canary") == 2
    assert answer(client, "/models/circles/versions/2/predict") == 2
    assert roles(client) == {1: "serving", 2: "candidate"}
    model = client.get("/models/circles").get_json()
    assert model["latest_version"] == 1
    assert model["serving"]["new_versions"] == "hold"
    # promoted by the label stable: all of it at the next check
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 2}})
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(50)} == {2}
    assert roles(client) == {1: "candidate", 2: "serving"}  # kept for a roll-back
    # and back (a roll-back is the same edit)
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(20)} == {1}


def test_weights_promote_a_canary_share(app, repo):
    client = app.test_client()
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    publish(repo, "circles", 2)
    publish(repo, "circles", 3)
    serving_json(
        repo,
        "circles",
        {
            "new_versions": "hold",
            "labels": {"stable": 1, "canary": 2},
            "weights": {"stable": 0.5, "canary": 0.5},
        },
    )
    state(app).lifecycle.refresh()
    seen = {answer(client) for _ in range(200)}
    assert seen == {1, 2}  # never 3: newer than every promoted version
    assert roles(client) == {1: "serving", 2: "serving", 3: "candidate"}


def test_a_new_instance_holds_what_serving_json_holds(repo):
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    publish(repo, "circles", 2)
    client = make_app(repo).test_client()  # a pod that starts in the middle of a review
    assert {answer(client) for _ in range(30)} == {1}


def test_without_a_named_version_the_instance_keeps_what_it_found_and_the_api_promotes(app, repo):
    client = app.test_client()
    serving_json(repo, "circles", {"new_versions": "hold"})
    state(app).lifecycle.refresh()
    publish(repo, "circles", 2)
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(30)} == {1}
    assert state(app).lifecycle.control.read()["holds"]["circles"] == {"promoted": [1]}
    response = client.post("/models/circles/versions/2/promote")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["latest_version"] == 2
    assert {answer(client) for _ in range(30)} == {2}
    # serving.json naming the serving version is the one truth: the API refuses then
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    state(app).lifecycle.refresh()
    refused = client.post("/models/circles/versions/2/promote")
    assert refused.status_code == 409
    assert "promote by editing it" in refused.get_json()["error"]["message"]
    serving_json(repo, "circles", {})
    state(app).lifecycle.refresh()
    refused = client.post("/models/circles/versions/2/promote")
    assert refused.status_code == 409
    assert "new_versions serve" in refused.get_json()["error"]["message"]
    assert "circles" not in state(app).lifecycle.control.read().get("holds", {})


def test_latest_n_counts_only_promoted_versions_under_hold(app, repo):
    client = app.test_client()
    serving_json(
        repo,
        "circles",
        {"new_versions": "hold", "labels": {"stable": 1}, "version_policy": {"latest": 1}},
    )
    publish(repo, "circles", 2)
    state(app).lifecycle.refresh()
    assert roles(client) == {1: "serving", 2: "candidate"}
    assert {answer(client) for _ in range(20)} == {1}


def test_no_promoted_version_loaded_is_a_503_never_the_candidate(tmp_path):
    publish(
        tmp_path, "circles", 1, edit=lambda meta, folder: (folder / "model.onnx").write_bytes(b"x")
    )
    publish(tmp_path, "circles", 2)
    serving_json(tmp_path, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    app = make_app(tmp_path)
    client = app.test_client()
    response = client.post("/models/circles/predict", json={"instances": [[0.1, 0.2]]})
    assert response.status_code == 503
    assert "held (new_versions hold)" in response.get_json()["error"]["message"]
    assert answer(client, version="2") == 2
    assert client.get("/health/ready").status_code == 503


def scrape(client) -> dict[tuple, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_shadow_comparisons_equal_what_the_two_models_say(app, repo):
    client = app.test_client()
    # a model of its own: the process's metrics registry is shared by every test
    publish(repo, "shadowed", 1)
    publish(repo, "shadowed", 2, edit=shifted)
    serving_json(
        repo,
        "shadowed",
        {
            "new_versions": "hold",
            "labels": {"stable": 1},
            "shadow": {"version": 2, "fraction": 1.0},
        },
    )
    state(app).lifecycle.refresh()
    assert roles(client, "shadowed") == {1: "serving", 2: "shadow"}
    for start in range(0, len(POINTS), 40):
        response = client.post(
            "/models/shadowed/predict", json={"instances": POINTS[start : start + 40].tolist()}
        )
        assert response.get_json()["model"]["version"] == 1
    assert state(app).dataplane.shadow.idle()
    z1, z2 = logits(repo / "shadowed" / "1", POINTS), logits(repo / "shadowed" / "2", POINTS)
    p, q = probabilities(z1), probabilities(z2)
    won1, won2 = (z1[:, 0] > 0).astype(int), (z2[:, 0] > 0).astype(int)
    disagree = int((won1 != won2).sum())
    assert 0 < disagree < len(POINTS)  # a known share, neither none nor all
    rows = np.arange(len(POINTS))
    block = client.get("/models/shadowed").get_json()["shadow"]
    assert block["version"] == 2
    assert block["compared_with"] == [1]
    (found,) = block["comparisons"]
    assert found["comparisons"] == len(POINTS)
    assert found["agreements"] == len(POINTS) - disagree
    assert found["mean_abs_delta"] == pytest.approx(
        np.abs(p[rows, won1] - q[rows, won1]).mean(), abs=1e-5
    )
    kl = np.sum(p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12))), axis=1)
    assert found["mean_kl"] == pytest.approx(kl.mean(), abs=1e-5)
    assert found["flips"] == [{"served": "inner", "shadow": "outer", "count": disagree}]
    assert found["other_flips"] == 0
    samples = scrape(client)
    labels = {"model": "shadowed", "version": "1", "shadow_version": "2"}
    key = lambda name, **more: (name, frozenset({**labels, **more}.items()))  # noqa: E731
    assert samples[key("shadow_comparisons_total", outcome="disagree")] == disagree
    assert samples[key("shadow_comparisons_total", outcome="agree")] == len(POINTS) - disagree
    assert (
        samples[key("shadow_label_flips_total", served_label="inner", shadow_label="outer")]
        == disagree
    )
    assert samples[key("shadow_probability_delta_count")] == len(POINTS)
    assert (
        samples[
            (
                "model_version_role",
                frozenset({"model": "shadowed", "version": "2", "role": "shadow"}.items()),
            )
        ]
        == 1
    )


def test_a_shadow_that_cannot_be_compared_says_why(app, repo):
    client = app.test_client()
    publish(repo, "circles", 2)
    serving_json(repo, "circles", {"shadow": {"version": 2}})  # serve: v2 is the latest
    state(app).lifecycle.refresh()
    problems = client.get("/models/circles").get_json()["serving"]["problems"]
    assert any("answers requests that name no version" in p for p in problems)
    compared = lambda: sum(  # noqa: E731  (the registry is the process's: count the change)
        v for (name, _), v in scrape(client).items() if name == "shadow_comparisons_total"
    )
    before = compared()
    client.post("/models/circles/predict", json={"instances": [[0.1, 0.2]]})
    assert state(app).dataplane.shadow.idle()
    assert compared() == before
    publish(repo, "circles", 3, source="blobs")  # other classes
    serving_json(
        repo, "circles", {"new_versions": "hold", "labels": {"stable": 2}, "shadow": {"version": 3}}
    )
    state(app).lifecycle.refresh()
    problems = client.get("/models/circles").get_json()["serving"]["problems"]
    assert any("takes other inputs or classes than version(s) [2]" in p for p in problems)
    serving_json(repo, "circles", {"shadow": {"version": "nope"}})
    state(app).lifecycle.refresh()
    problems = client.get("/models/circles").get_json()["serving"]["problems"]
    assert any("shadow names 'nope', which is not a label" in p for p in problems)


def test_a_full_shadow_queue_drops_and_counts(app, repo, monkeypatch):
    publish(repo, "circles", 2, edit=shifted)
    state(app).lifecycle.refresh()
    registry = state(app).registry
    served, shadow = registry.version("circles", 1), registry.version("circles", 2)
    queue = Shadow(1, 1 << 20)
    monkeypatch.setattr(queue, "_start", lambda: None)  # nobody drains it
    batch = np.zeros((3, 2), np.float32)
    p, won = np.full((3, 2), 0.5), np.zeros(3, int)
    queue.submit(served, shadow, batch, p, won)
    queue.submit(served, shadow, batch, p, won)
    samples = scrape(app.test_client())
    labels = frozenset({"model": "circles", "version": "1", "shadow_version": "2"}.items())
    assert samples[("shadow_dropped_total", labels)] >= 3


def test_a_retired_version_leaves_metrics_and_a_failed_one_reads_zero(app, repo):
    client = app.test_client()
    publish(repo, "circles", 2)
    serving_json(repo, "circles", {"alerts": {"p99_latency_s": 0.4}})
    state(app).lifecycle.refresh()
    assert answer(client, version="1") == 1
    assert answer(client, version="2") == 2
    before = scrape(client)
    v1 = [k for k in before if ("version", "1") in k[1] and ("model", "circles") in k[1]]
    assert ("model_loaded", frozenset({"model": "circles", "version": "1"}.items())) in v1
    assert (
        before[
            (
                "model_alert_threshold",
                frozenset({"model": "circles", "alert": "p99_latency_s"}.items()),
            )
        ]
        == 0.4
    )
    serving_json(repo, "circles", {"version_policy": {"latest": 1}})
    state(app).lifecycle.refresh()
    shutil.rmtree(repo / "circles" / "1")
    state(app).lifecycle.refresh()
    after = scrape(client)
    assert not [k for k in after if ("version", "1") in k[1] and ("model", "circles") in k[1]]
    assert not [
        k for k in after if k[0] == "model_alert_threshold" and ("model", "circles") in k[1]
    ]
    assert after[("model_loaded", frozenset({"model": "circles", "version": "2"}.items()))] == 1
    publish(repo, "circles", 3, edit=lambda meta, folder: (folder / "model.onnx").write_bytes(b"x"))
    serving_json(repo, "circles", {})
    state(app).lifecycle.refresh()
    failed = scrape(client)
    assert failed[("model_loaded", frozenset({"model": "circles", "version": "3"}.items()))] == 0


def broken(meta, folder):
    (folder / "model.onnx").write_bytes(b"not onnx")


def test_dropping_the_promoting_entry_keeps_what_it_promoted(app, repo):
    client = app.test_client()
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    publish(repo, "circles", 2)
    publish(repo, "circles", 3)
    state(app).lifecycle.refresh()
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"prod": 1, "canary": 3}})
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(30)} == {1}
    assert roles(client) == {1: "serving", 2: "candidate", 3: "candidate"}


@pytest.mark.parametrize(
    "rules",
    [
        {"new_versions": "hold", "labels": {"stable": 3}},
        {"new_versions": "hold", "weights": {"3": 1}},
        {"new_versions": "hold", "labels": {"stable": 12}},  # a typo
    ],
)
def test_a_promoted_version_that_cannot_serve_is_a_503_never_a_version_below_it(app, repo, rules):
    client = app.test_client()
    serving_json(repo, "circles", {"new_versions": "hold", "labels": {"stable": 1}})
    publish(repo, "circles", 2)
    publish(repo, "circles", 3, edit=broken)
    serving_json(repo, "circles", rules)
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(20)} == {None}
    response = client.post("/models/circles/predict", json={"instances": [[0.1, 0.2]]})
    assert response.status_code == 503
    problems = client.get("/models/circles").get_json()["serving"]["problems"]
    assert any("no promoted version is loaded" in p for p in problems)
    assert roles(client)[2] == "candidate"


def test_a_new_instance_under_plain_hold_refuses_rather_than_guess(repo):
    serving_json(repo, "circles", {"new_versions": "hold"})
    publish(repo, "circles", 2)
    client = make_app(repo).test_client()
    response = client.post("/models/circles/predict", json={"instances": [[0.1, 0.2]]})
    assert response.status_code == 503
    problems = client.get("/models/circles").get_json()["serving"]["problems"]
    assert any("name the serving one in serving.json (labels.stable" in p for p in problems)
    ready = client.get("/health/ready").get_json()
    assert "no promoted version is loaded" in ready["reason"]


def test_hold_turned_on_keeps_what_served_not_a_failed_version_fixed_later(app, repo):
    client = app.test_client()
    publish(repo, "circles", 2, edit=broken)
    state(app).lifecycle.refresh()
    assert answer(client) == 1
    serving_json(repo, "circles", {"new_versions": "hold"})
    state(app).lifecycle.refresh()
    shutil.rmtree(repo / "circles" / "2")
    publish(repo, "circles", 2)  # fixed
    state(app).lifecycle.refresh()
    assert {answer(client) for _ in range(20)} == {1}
    assert roles(client) == {1: "serving", 2: "candidate"}


def test_a_bad_serving_json_and_a_restarting_worker_keep_the_hold(repo, tmp_path):
    from service.models.control import ControlStore
    from service.models.lifecycle import Lifecycle
    from service.models.registry import Registry

    settings = Settings.from_env(
        {}, model_repository=repo, default_model="circles", poll_interval_s=0
    )
    runtime = tmp_path / "runtime"

    def worker():
        registry = Registry(settings)
        lifecycle = Lifecycle(settings, registry, ControlStore(runtime))
        lifecycle.start(watch=False)
        return registry, lifecycle

    serving_json(repo, "circles", {"new_versions": "hold"})
    (a, life_a), (b, life_b) = worker(), worker()
    publish(repo, "circles", 2)
    life_a.refresh()
    life_b.refresh()
    serving_json(repo, "circles", '{"new_versions": "hold",}')  # a trailing comma
    life_a.refresh()
    c, _ = worker()  # replaces a worker that exited
    life_a.tick()
    life_b.tick()
    for registry in (a, b, c):
        assert registry.version("circles", None).version == 1
        assert registry.model("circles").role(2) == "candidate"


def shadowed_app(repo, source="circles", name="shadowed", edit=shifted, **settings):
    publish(repo, name, 1, source=source)
    publish(repo, name, 2, source=source, edit=edit)
    serving_json(
        repo, name, {"new_versions": "hold", "labels": {"stable": 1}, "shadow": {"version": 2}}
    )
    return make_app(repo, **settings)


def test_the_shadow_queue_is_bounded_by_bytes_too(repo, monkeypatch):
    app = shadowed_app(repo, name="bytes")
    registry = state(app).registry
    served, shadow = registry.version("bytes", 1), registry.version("bytes", 2)
    queue = Shadow(64, 1000)
    monkeypatch.setattr(queue, "_start", lambda: None)
    big = np.zeros((100, 2), np.float32)  # 800 bytes
    p, won = np.full((100, 2), 0.5), np.zeros(100, int)
    queue.submit(served, shadow, big, p, won)
    queue.submit(served, shadow, big, p, won)  # 1,600 bytes would be over
    labels = frozenset({"model": "bytes", "version": "1", "shadow_version": "2"}.items())
    assert scrape(app.test_client())[("shadow_dropped_total", labels)] == 100
    assert len(queue._jobs) == 1


def test_a_closed_shadow_finishes_its_run_and_takes_nothing_more(repo):
    app = shadowed_app(repo, name="closing")
    client = app.test_client()
    shadow = state(app).dataplane.shadow
    client.post("/models/closing/predict", json={"instances": POINTS[:10].tolist()})
    assert shadow.idle()
    thread = shadow._thread
    shadow.close()
    assert not thread.is_alive()
    client.post("/models/closing/predict", json={"instances": POINTS[:10].tolist()})
    (found,) = client.get("/models/closing").get_json()["shadow"]["comparisons"]
    assert found["comparisons"] == 10


def test_a_retired_shadow_lets_its_session_go(repo):
    import gc
    import weakref

    app = shadowed_app(repo, name="letgo")
    client = app.test_client()
    client.post("/models/letgo/predict", json={"instances": POINTS[:10].tolist()})
    assert state(app).dataplane.shadow.idle()
    session = weakref.ref(state(app).registry.version("letgo", 2).predictor)
    serving_json(repo, "letgo", {"new_versions": "hold", "labels": {"stable": 1}})
    shutil.rmtree(repo / "letgo" / "2")
    state(app).lifecycle.refresh()
    gc.collect()
    assert session() is None


def scramble(meta, folder):
    """fashion-mnist with its last layer drawn at random: it disagrees on many class pairs."""
    path = folder / "model.onnx"
    model = onnx.load(path)
    weights = next(i for i in model.graph.initializer if list(i.dims) == [128, 10])
    values = onnx.numpy_helper.to_array(weights)
    values = np.random.default_rng(3).normal(0, 3 * values.std(), values.shape)
    weights.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weights.name))
    onnx.save(model, path)
    meta["export"]["onnx_sha256"] = sha256_file(path)


def test_flips_are_ranked_by_their_exact_counts_and_their_series_stay_bounded(repo):
    from service.inference import shadow as shadow_module

    app = shadowed_app(repo, source="fashion-mnist", name="flips", edit=scramble)
    client = app.test_client()
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "send_fashion", MODELS.parent / "docs" / "examples" / "send_fashion.py"
    )
    send_fashion = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(send_fashion)
    images = send_fashion.images(600).tolist()  # Fashion-MNIST's test images
    for start in range(0, 600, 100):
        client.post("/models/flips/predict", json={"instances": images[start : start + 100]})
    assert state(app).dataplane.shadow.idle()
    (found,) = client.get("/models/flips").get_json()["shadow"]["comparisons"]
    exact = shadow_module._FLIPS["flips|1|2"]
    assert len(exact) > 20  # more pairs than series
    ranked = sorted(exact.items(), key=lambda item: (-item[1], item[0]))
    assert [(f["served"], f["shadow"], f["count"]) for f in found["flips"]] == [
        (a, b, n) for (a, b), n in ranked[:20]
    ]
    assert found["other_flips"] == sum(n for _, n in ranked[20:])
    assert found["comparisons"] - found["agreements"] == sum(exact.values())
    pairs = {
        (dict(k[1])["served_label"], dict(k[1])["shadow_label"])
        for k in scrape(client)
        if k[0] == "shadow_label_flips_total" and ("model", "flips") in k[1]
    }
    assert len(pairs) == 21  # 20 pairs and other
    assert ("other", "other") in pairs


def test_a_failing_shadow_run_is_counted(repo, monkeypatch):
    app = shadowed_app(repo, name="failing")
    client = app.test_client()
    shadow = state(app).registry.version("failing", 2)

    def fail(batch):
        raise RuntimeError("onnxruntime failed")

    monkeypatch.setattr(shadow.predictor, "predict", fail)
    client.post("/models/failing/predict", json={"instances": POINTS[:7].tolist()})
    assert state(app).dataplane.shadow.idle()
    (found,) = client.get("/models/failing").get_json()["shadow"]["comparisons"]
    assert (found["failed"], found["comparisons"]) == (7, 0)


@pytest.mark.parametrize(
    "rules",
    [
        '{"shadow": {"version": 1, "fraction": NaN}}',
        '{"alerts": {"p99_latency_s": NaN}}',
        '{"alerts": {"shadow_disagreement": NaN}}',
        '{"shadow": {"version": 1e300}}',
    ],
)
def test_numbers_that_are_not_numbers_are_refused(app, repo, rules):
    serving_json(repo, "circles", rules)
    state(app).lifecycle.refresh()
    problems = app.test_client().get("/models/circles").get_json()["serving"]["problems"]
    assert problems
    assert problems[0].startswith("serving.json")


def test_promoting_a_version_that_is_not_loaded_is_a_409(app, repo):
    client = app.test_client()
    serving_json(repo, "circles", {"new_versions": "hold"})
    state(app).lifecycle.refresh()
    publish(repo, "circles", 2, edit=broken)
    state(app).lifecycle.refresh()
    refused = client.post("/models/circles/versions/2/promote")
    assert refused.status_code == 409
    assert "only a loaded version can be promoted" in refused.get_json()["error"]["message"]
    assert client.post("/models/circles/versions/9/promote").status_code == 404
