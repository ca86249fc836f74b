"""Roll-outs on a real gunicorn with 2 workers: a held candidate under live traffic, its
promotion, a shadow whose disagreements are counted exactly across workers, a retire that
leaves no series, and the shipped Prometheus config and rules watching all of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from collections import Counter

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import call, free_port, running_server
from tests.e2e.test_lifecycle import Load, both_workers, predict
from tests.e2e.test_walkthrough import _run as run_step
from tests.e2e.test_walkthrough import _same as same_lines
from tests.e2e.test_walkthrough import walkthrough
from tests.helpers import ROOT
from tests.service.models.test_lifecycle import publish, serving_json
from tests.service.models.test_rollouts import POINTS, logits, shifted

pytestmark = pytest.mark.slow

INTERVAL = 0.5  # SERVING_POLL_INTERVAL_S


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "circles", 1)  # the default model
    with running_server(
        tmp_path_factory.mktemp("server"),
        model_repository=str(repo),
        default_model="circles",
        poll_interval_s=str(INTERVAL),
    ) as server:
        yield server, repo


def rules_applied(server, name: str, since: float) -> None:
    both_workers(server, f"model {name}: serving.json", since)


def series(server) -> dict[tuple[str, frozenset], float]:
    text = call("GET", f"{server.url}/metrics")[2]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_held_version_answers_nothing_unversioned_until_promoted(live):
    server, repo = live
    publish(repo, "rollout", 1)
    serving_json(repo, "rollout", {"new_versions": "hold", "labels": {"stable": 1}})
    both_workers(server, "loaded model rollout v1", 0)
    loads = [Load(f"{server.url}/models/rollout/predict") for _ in range(2)]
    for load in loads:
        load.start()
    published = time.time()
    publish(repo, "rollout", 2)
    both_workers(server, "loaded model rollout v2", published)
    time.sleep(2 * INTERVAL)
    _status, _, model = call("GET", f"{server.url}/models/rollout")
    assert [(v["version"], v["role"]) for v in model["versions"]] == [
        (1, "serving"),
        (2, "candidate"),
    ]
    assert predict(f"{server.url}/models/rollout/versions/2/predict")[1]["model"]["version"] == 2
    promoted = time.time()
    serving_json(repo, "rollout", {"new_versions": "hold", "labels": {"stable": 2}})
    applied = both_workers(server, "model rollout: serving.json", promoted)
    time.sleep(1.0)
    results = [r for load in loads for r in load.finish()]
    assert not [r for r in results if r[1] != 200], results[:5]
    before = [version for started, _, version in results if started < promoted]
    after = [version for started, _, version in results if started > max(applied.values()) + 0.05]
    assert len(before) > 50
    assert after
    assert set(before) == {1}  # not one answer from v2 before the promotion
    assert set(after) == {2}
    assert max(applied.values()) - promoted <= 2 * INTERVAL + 0.5  # within one poll

    # retire v1: the policy first, then its folder; no series of it is left on any worker
    retired = time.time()
    serving_json(
        repo,
        "rollout",
        {"new_versions": "hold", "labels": {"stable": 2}, "version_policy": {"latest": 1}},
    )
    both_workers(server, "unloading model rollout v1", retired)
    shutil.rmtree(repo / "rollout" / "1")
    time.sleep(3 * INTERVAL)
    for _ in range(10):  # scrapes answered by either worker
        left = [k for k in series(server) if {("model", "rollout"), ("version", "1")} <= k[1]]
        assert not left, left
    assert (
        series(server)[("model_loaded", frozenset({"model": "rollout", "version": "2"}.items()))]
        == 1
    )


def send_points(server, model: str) -> tuple[int, set[int]]:
    """POINTS to the model, 40 a request, in rounds until both workers have answered some:
    (rounds, pids)."""
    rounds, pids = 0, set()
    while rounds < 10 and len(pids) < 2:
        since = time.time()
        for start in range(0, len(POINTS), 40):
            body = json.dumps({"instances": POINTS[start : start + 40].tolist()}).encode()
            status, _, answer = call(
                "POST", f"{server.url}/models/{model}/predict", body, "application/json"
            )
            assert (status, answer["model"]["version"]) == (200, 1)
        rounds += 1
        time.sleep(0.3)  # the access lines
        pids |= {
            line["pid"]
            for line in server.log_lines()
            if line.get("logger") == "service.access"
            and line.get("path") == f"/models/{model}/predict"
            and line["time"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since - 1))
        }
    return rounds, pids


def shadowed_model(server, repo, name: str) -> int:
    """A model whose v2 disagrees with v1 on a known share of POINTS, as v1's shadow; the
    number of POINTS on which they disagree."""
    publish(repo, name, 1)
    publish(repo, name, 2, edit=shifted)
    since = time.time()
    serving_json(
        repo,
        name,
        {
            "new_versions": "hold",
            "labels": {"stable": 1},
            "shadow": {"version": 2, "fraction": 1.0},
        },
    )
    rules_applied(server, name, since)
    both_workers(server, f"loaded model {name} v2", 0)
    z1, z2 = logits(repo / name / "1", POINTS), logits(repo / name / "2", POINTS)
    return int(((z1[:, 0] > 0) != (z2[:, 0] > 0)).sum())


def test_shadow_counts_are_exact_over_both_workers(live):
    server, repo = live
    disagree = shadowed_model(server, repo, "shadowed")
    rounds, pids = send_points(server, "shadowed")
    assert len(pids) == 2
    n = rounds * len(POINTS)
    deadline, found = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        model = call("GET", f"{server.url}/models/shadowed")[2]
        (found,) = model["shadow"]["comparisons"] or [None]
        if found and found["comparisons"] == n:
            break
        time.sleep(0.2)
    assert found["comparisons"] == n, found
    assert found["agreements"] == n - rounds * disagree
    assert found["dropped"] == 0
    assert found["flips"] == [{"served": "inner", "shadow": "outer", "count": rounds * disagree}]
    samples = series(server)
    labels = {"model": "shadowed", "version": "1", "shadow_version": "2"}
    for outcome, count in (("agree", n - rounds * disagree), ("disagree", rounds * disagree)):
        key = ("shadow_comparisons_total", frozenset({**labels, "outcome": outcome}.items()))
        assert samples[key] == count
    role = (
        "model_version_role",
        frozenset({"model": "shadowed", "version": "2", "role": "shadow"}.items()),
    )
    assert samples[role] == 1


def test_the_shipped_prometheus_config_and_rules_fire_as_they_should(live, tmp_path):
    """Prometheus with monitoring/prometheus.yml and alerts.yml, changed only to scrape this
    server every second and to fire at once (``for: 0s``): a retire fires nothing, a failed
    serving version and a failed candidate fire their alerts, a disagreeing shadow fires."""
    server, repo = live
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    rules = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [
        server.url.removeprefix("http://")
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                shutil.which("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    api = f"http://127.0.0.1:{port}/api/v1"

    def alerts() -> list[dict]:
        try:
            status, _, body = call("GET", api + "/alerts")
        except OSError:
            return []
        return body["data"]["alerts"] if status == 200 else []

    def query(expr: str) -> list[dict]:
        try:
            status, _, body = call("GET", api + "/query?" + urllib.parse.urlencode({"query": expr}))
        except OSError:  # not listening yet
            return []
        return body["data"]["result"] if status == 200 else []

    def firing(name: str, timeout: float = 45.0, **labels) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in alerts():
                if (
                    alert["labels"]["alertname"] == name
                    and labels.items() <= alert["labels"].items()
                ) and alert["state"] == "firing":
                    return alert
            time.sleep(0.5)
        log = (tmp_path / "prometheus.log").read_text()[-2000:]
        pytest.fail(f"{name} {labels} did not fire; alerts: {alerts()}\n{log}")

    seen: Counter = Counter()
    try:
        deadline = time.monotonic() + 30
        while not query('up{job="keras-classifier-serving"} == 1'):
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        # a retire while Prometheus watches: nothing fires
        publish(repo, "retiring", 1)
        publish(repo, "retiring", 2)
        both_workers(server, "loaded model retiring v2", 0)
        time.sleep(3)
        since = time.time()
        serving_json(repo, "retiring", {"version_policy": {"latest": 1}})
        both_workers(server, "unloading model retiring v1", since)
        shutil.rmtree(repo / "retiring" / "1")
        for _ in range(16):  # 8 s of scrapes and evaluations
            seen.update(
                a["labels"]["alertname"] for a in alerts() if a["labels"].get("model") == "retiring"
            )
            time.sleep(0.5)
        assert not seen, seen
        assert [r["metric"]["version"] for r in query('model_loaded{model="retiring"}')] == ["2"]
        # a failed serving version pages; a failed candidate only warns
        publish(
            repo, "broken", 1, edit=lambda meta, folder: (folder / "model.onnx").write_bytes(b"x")
        )
        page = firing("ServingModelNotLoaded", model="broken", version="1")
        assert page["labels"]["severity"] == "page"
        disagree = shadowed_model(server, repo, "watched")
        publish(
            repo, "watched", 3, edit=lambda meta, folder: (folder / "model.onnx").write_bytes(b"x")
        )
        warn = firing("ServingCandidateNotLoaded", model="watched", version="3")
        assert warn["labels"]["severity"] == "warn"
        assert not [
            a
            for a in alerts()
            if a["labels"]["alertname"] == "ServingModelNotLoaded"
            and a["labels"]["model"] == "watched"
        ]
        # a shadow that disagrees on a third of the inputs
        assert disagree / len(POINTS) > 0.05
        # (rates need traffic over several scrapes: a counter's first sample counts nothing)
        traffic = Load(
            f"{server.url}/models/watched/predict",
            json.dumps({"instances": POINTS[:40].tolist()}).encode(),
        )
        traffic.start()
        try:
            firing("ServingShadowDisagreement", model="watched", version="1", shadow_version="2")
        finally:
            assert all(status == 200 for _, status, _ in traffic.finish())
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_walkthrough(tmp_path) -> list[tuple[str, list[str], list[str]]]:
    """The page's roll-out walkthrough run as written on a scratch repository (the serve
    step is a real gunicorn on a free port): (command, recorded, printed) per step."""
    steps = walkthrough("rollout-walkthrough", ROOT / "docs" / "operations" / "rollouts.md")
    serve = next(i for i, (command, _) in enumerate(steps) if "scripts/serve.sh" in command)
    assert steps[serve][0] == "SERVING_MODEL_REPOSITORY=/tmp/rollout bash scripts/serve.sh &"
    repo = tmp_path / "rollout"

    def local(command: str, url: str = "") -> str:
        command = command.replace("/tmp/rollout", str(repo))
        if url:
            command = command.replace("localhost:8000", url.removeprefix("http://"))
            command = re.sub(r"(send_fashion\.py \d+)", rf"\1 --url {url}", command)
        return command

    done = [(command, recorded, run_step(local(command))) for command, recorded in steps[:serve]]
    with running_server(
        tmp_path, model_repository=str(repo), default_model="fashion-mnist"
    ) as server:
        for command, recorded in steps[serve + 1 :]:
            printed = run_step(local(command, server.url))
            deadline = time.monotonic() + 30
            while "shadow" in command and not same_lines(recorded, printed):
                # the comparisons run after the answers, at the lowest priority: on a busy
                # machine the last ones may still be queued
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
                printed = run_step(local(command, server.url))
            done.append((command, recorded, printed))
    return done


def test_the_rollout_walkthrough_prints_what_the_page_says(tmp_path):
    for command, recorded, printed in run_walkthrough(tmp_path):
        assert same_lines(recorded, printed), (command, recorded, printed)
