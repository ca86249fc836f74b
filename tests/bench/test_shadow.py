"""bench/shadow.py: its rules, repository, arithmetic and report, and the docs table made
from its run (the measurement itself starts the service and runs ~10 minutes of load: it is
run by hand, not here)."""

from __future__ import annotations

import json

import pytest

from bench import shadow
from service.models.serving_config import ServingConfig
from tests.helpers import MODELS, ROOT


def test_rules_are_valid_serving_json_with_and_without_the_shadow():
    off = ServingConfig.from_dict(shadow.serving_json(False))
    on = ServingConfig.from_dict(shadow.serving_json(True))
    assert off.shadow is None
    assert on.shadow == (2, 1.0)
    for config in (off, on):
        assert config.hold
        assert config.labels == {"stable": 1}
    assert ServingConfig.from_dict(shadow.serving_json(True, 0.25)).shadow == (2, 0.25)


def test_versions_are_comparable_only_with_the_same_input_preprocessing_and_classes():
    v1, v2 = (
        json.loads((MODELS / "fashion-mnist" / v / "metadata.json").read_text()) for v in "12"
    )
    assert shadow.incomparable(v1, v2) == []
    other = {**v2, "classes": list(reversed(v2["classes"]))}
    assert shadow.incomparable(v1, other) == ["classes"]


def test_repository_holds_two_versions_of_each_model_with_the_shadow_off(tmp_path):
    assert shadow.make_repository(tmp_path) == {name: [] for name in shadow.SOURCES}
    for name, (v1, v2, _) in shadow.SOURCES.items():
        for version, source in ((1, v1), (2, v2)):
            folder = tmp_path / name / str(version)
            meta = json.loads((folder / "metadata.json").read_text())
            assert (meta["name"], meta["version"]) == (name, version)
            assert (folder / "model.onnx").read_bytes() == (source / "model.onnx").read_bytes()
        rules = json.loads((tmp_path / name / "serving.json").read_text())
        assert rules == shadow.serving_json(False)


def test_rules_count_as_applied_once_every_worker_logged_them(tmp_path):
    log_file = tmp_path / "service.log"
    line = {
        "level": "INFO",
        "logger": "service.models.lifecycle",
        "message": "model circles: serving.json {'labels': {'stable': 1}, "
        "'shadow': {'version': 2, 'fraction': 1.0}}",
    }
    log_file.write_text(json.dumps({**line, "pid": 11}) + "\n")
    assert not shadow.applied_rules(log_file, 0, "circles", [11, 12], True)
    with log_file.open("a") as f:
        f.write(json.dumps({**line, "pid": 12}) + "\n")
    assert shadow.applied_rules(log_file, 0, "circles", [11, 12], True)
    assert not shadow.applied_rules(log_file, 0, "circles", [11, 12], False)
    assert not shadow.applied_rules(log_file, 0, "fashion-mnist", [11, 12], True)
    assert not shadow.applied_rules(log_file, log_file.stat().st_size, "circles", [11], True)


def test_log_problems_keep_warnings_and_tracebacks_not_access_lines(tmp_path):
    log_file = tmp_path / "service.log"
    lines = [
        {"level": "INFO", "logger": "service.access", "message": "POST /predict 200"},
        {"level": "INFO", "logger": "service.models.loader", "message": "loaded"},
        {"level": "WARNING", "logger": "service.keys", "message": "API keys are off: ..."},
        {"level": "ERROR", "logger": "service.inference.shadow", "message": "shadow failed"},
    ]
    text = "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)
    log_file.write_text(text + "Traceback (most recent call last):\n")
    kept, unexpected = shadow.log_problems(log_file)
    assert len(kept) == 3
    assert unexpected == 2
    assert "shadow failed" in kept[1]
    assert kept[2].startswith("Traceback")


def _window(rps, p50, p99, **counts):
    seconds = 10.0
    window = {
        "concurrency": 32,
        "requests": int(rps * seconds),
        "rps": rps,
        "p50_ms": p50,
        "p90_ms": p50,
        "p99_ms": p99,
        "errors": 0,
        "steal_pct": 0.0,
        "machine_busy_s": 20.0,
        "machine_total_s": 20.0,
        "shadow_thread_cpu_s": 0.0,
        "shadow_session_s": 0.0,
        "other_cpu_s": 0.1,
        "worker_cpu_s": [9.0, 9.0],
        "wrk_cpu_s": 1.9,
    }
    for key in ("served", "comparisons", "disagreements", "dropped"):
        window[key] = counts.get(key, 0)
    for key in ("shadow_calls", "shadow_instances", "config_errors"):
        window[key] = 0
    window["shadow_thread_cpu_s"] = counts.get("thread_s", 0.0)
    return window


def _point(model, off_rps, on_rps, on_p50, on_p99, shadow_ms):
    off = shadow.summarize([_window(off_rps, 10.0, 20.0), _window(off_rps, 10.0, 20.0)])
    on = shadow.summarize(
        [
            _window(on_rps, on_p50, on_p99, served=int(on_rps * 10), comparisons=500,
                    dropped=int(on_rps * 10) - 500, thread_s=0.25),
            _window(on_rps, on_p50, on_p99, served=int(on_rps * 10), comparisons=500,
                    dropped=int(on_rps * 10) - 500, thread_s=0.25),
        ]
    )  # fmt: skip
    point = {"model": model, "concurrency": 32, "off": off, "on": on, "discarded": []}
    point["ratios"] = shadow.compare(off, on, shadow_ms)
    return point


def test_ratios_and_the_floor_the_shadow_cost_sets():
    point = _point("fashion-mnist", 1000.0, 850.0, 10.5, 23.0, 0.5)
    off, r = point["off"], point["ratios"]
    assert off["rps"] == 1000.0
    assert off["cpu_ms_per_request"] == 2.0
    assert r["rps_ratio"] == 0.85
    assert r["p50_ratio"] == 1.05
    assert r["p99_ratio"] == 1.15
    assert r["shadow_share"] == 0.25
    assert r["rps_floor"] == 0.8  # 2.0 / (2.0 + 0.5): every request paying its shadow run
    assert r["compared_pct"] == pytest.approx(100 * 1000 / 17000, abs=0.01)
    assert r["accounted"]  # compared + dropped == served
    assert r["shadow_thread_ms"] == 0.5  # 0.5 s of shadow-thread CPU / 1,000 comparisons


def test_targets_and_report_name_what_was_met():
    document = {
        "created_at": "now",
        "command": "python -m bench.shadow",
        "machine": {
            "nproc": 2,
            "cpu": "AMD EPYC",
            "platform": "Linux",
            "python": "3.11",
            "onnxruntime": "1.31",
        },
        "settings": {
            "workers": 2,
            "poll_interval_s": 0.5,
            "rounds": 2,
            "seconds": 25.0,
            "warmup": 3.0,
        },
        "points": [
            _point("fashion-mnist", 1000.0, 850.0, 10.5, 23.0, 0.5),
            _point("circles", 3000.0, 2700.0, 10.0, 20.0, 0.005),
            {**_point("circles", 3000.0, 1000.0, 30.0, 90.0, 0.005), "concurrency": 8},
        ],
        "in_process": {"circles/2": {"batch1_ms": 0.005, "batch32_ms_per_instance": 0.0002}},
        "checks": {
            "accounted": True,
            "accounting": ["circles c=32: served 27,000, compared 1,000 + dropped 26,000"],
            "config_errors": 0,
            "unexpected_log_lines": 0,
            "other_cpu_s": 0.1,
            "discarded": 0,
        },
    }
    checks = shadow.targets(document)
    assert len(checks) == 6  # the c=8 point is reported, not a target
    met = {c["target"]: c["met"] for c in checks}
    assert met["fashion-mnist, c=32: live p50 with the shadow on within 10% of off"]
    assert not met["fashion-mnist, c=32: live p99 with the shadow on within 10% of off"]
    throughput = (
        "throughput down by no more than the shadow model's own cost (ON/OFF >= c / (c + t))"
    )
    assert met[f"fashion-mnist, c=32: {throughput}"]  # 0.85 >= 0.8
    assert not met[f"circles, c=32: {throughput}"]  # 0.90 < 2 / 2.005
    document["targets"] = checks
    report = shadow.markdown(document)
    assert "| fashion-mnist | 32 | 0.850 | 1.050 | 1.150 | 0.500 | 2.000 | 0.25 | 0.800 |" in report
    assert (
        "| fashion-mnist | 32 | ON | 850.0 (850, 850) | 10.50 | 23.00 (23.0, 23.0) | 0 | 1,000 |"
        in report
    )
    assert (
        "| fashion-mnist, c=32: live p99 with the shadow on within 10% of off "
        "| 23.00 vs 20.00 ms (1.150x) | **no** |"
    ) in report
    assert "| circles/2 | 0.0050 | 0.0002 |" in report


def test_a_window_counts_as_shared_when_other_processes_took_over_5_percent():
    window = _window(1000.0, 10.0, 20.0)
    assert shadow.other_share(window) == 0.005  # 0.1 s of 20 s
    assert shadow.other_share({**window, "other_cpu_s": 1.1}) > shadow.OTHER_SHARE


def test_docs_shadow_tables_come_from_the_committed_run():
    page = (ROOT / "docs" / "performance.md").read_text()
    section = page.split("<!-- bench-shadow:start -->")[1].split("<!-- bench-shadow:end -->")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    results = (ROOT / "bench" / "results" / "shadow" / "README.md").read_text()
    assert len(rows) >= 10
    for row in rows:
        assert row in results, row
    document = json.loads((ROOT / "bench" / "results" / "shadow" / "results.json").read_text())
    assert document["command"] == "python -m bench.shadow"  # the full run, its defaults
    assert document["settings"]["rounds"] >= 2
