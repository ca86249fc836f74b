"""bench/: the quick harness run (so it cannot rot) and its pure parts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import harness
from tests.e2e.conftest import free_port
from tests.helpers import ROOT


@pytest.mark.slow
def test_quick_benchmark_runs_two_systems_and_reports(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--output",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--threads",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    document = json.loads((tmp_path / "results.json").read_text())
    assert set(document["systems"]) == {"service", "minimal"}
    for entry in document["systems"].values():
        points = entry["workloads"]["fashion-json"]
        assert [p["concurrency"] for p in points] == [1, 8]
        for point in points:
            assert point["errors"] == 0
            assert point["requests"] > 100
            assert 0 < point["p50_ms"] <= point["p99_ms"]
            assert point["rps"] > 50
    limit = document["limit"]
    assert limit["fashion-mnist/batch64"]["instances_per_s"] > 0
    assert limit["circles/batch1"]["calls_per_s"] > 0
    service = document["systems"]["service"]
    assert len(service["worker_rss_mb_after"]) == 2  # two gunicorn workers measured
    assert all(0 < rss < 1000 for rss in service["worker_rss_mb_after"])
    assert 0 < service["start_to_ready_s"] < 60
    markdown = (tmp_path / "results.md").read_text()
    assert "| service | 8 |" in markdown
    assert "| minimal | 1 |" in markdown
    assert document["settings"]["threads"] == 3
    assert (
        "every server runs 2 workers, the other gunicorn ones (minimal, keras, "
        "service-batching) 3 threads each, `service` its default"
    ) in markdown
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")


def _document(service_rps, other_rps, p50=1.0, p99=1.5, extra=None, limit=None):
    """A results document: fashion-json points at c=32 (``other_rps``: per system), plus
    ``extra`` {(system, workload, concurrency): (rps, p50, p99)} points."""

    def point(concurrency, rps, p50_ms, p99_ms):
        return {
            "concurrency": concurrency,
            "rps": rps,
            "p50_ms": p50_ms,
            "p99_ms": p99_ms,
            "p90_ms": p99_ms,
            "errors": 0,
            "requests": 1,
        }

    systems = {
        "service": {
            "workloads": {"fashion-json": [point(32, service_rps, p50, p99)]},
            "worker_rss_mb_after": [90.0, 91.0],
            "start_to_ready_s": 0.4,
        }
    }
    for name, rps in other_rps.items():
        systems[name] = {"workloads": {"fashion-json": [point(32, rps, 5.0, 20.0)]}}
    for (name, workload, c), (rps, p50_ms, p99_ms) in (extra or {}).items():
        entry = systems.setdefault(name, {"workloads": {}})
        entry["workloads"].setdefault(workload, []).append(point(c, rps, p50_ms, p99_ms))
    return {"systems": systems, "limit": limit or {}}


def test_targets_are_computed_from_the_same_run():
    extra = {
        ("service", "fashion-v2-binary", 32): (3600, 1.0, 1.5),
        ("service", "fashion-v2-json", 32): (2000, 2.0, 4.0),
        ("mlserver", "fashion-v2-json", 32): (900, 30.0, 50.0),
        ("kserve", "fashion-v2-json", 32): (1200, 3.0, 3.5),
        ("service", "fashion-json-64", 32): (60, 30.0, 40.0),
        ("keras", "fashion-json-64", 32): (0.5, 900.0, 1500.0),
        ("service", "fashion-v2-binary-64", 32): (50, 30.0, 40.0),
        ("service-batching", "fashion-json", 32): (3600, 1.0, 1.5),
        ("service-batching", "fashion-json-64", 32): (63, 30.0, 40.0),
        ("service-batching", "fashion-json", 8): (2000, 1.0, 1.5),
        ("service", "fashion-json", 8): (2200, 1.0, 1.5),
    }
    document = _document(
        3000,
        {"bentoml": 1000, "minimal": 3500},
        extra=extra,
        limit={"fashion-mnist/batch64": {"instances_per_s": 5000.0}},
    )
    checks = {c["target"]: c for c in harness.targets(document)}
    assert checks[">= the minimal Flask + onnxruntime app (native JSON, one image)"]["met"] is False
    assert checks["native JSON, one image: p99 <= 2x p50"]["met"] is True
    assert checks[">= 2x BentoML (native JSON, one image)"]["measured"] == "3.00x"
    v2 = checks["V2 binary, one image: >= 1.15x the service's native JSON"]
    assert (v2["measured"], v2["met"]) == ("1.20x", True)
    assert checks[">= 2x mlserver (V2 JSON)"]["met"] is True
    assert checks[">= 2x kserve (V2 JSON)"]["measured"] == "1.67x"
    assert checks["p99 below kserve's (V2 JSON)"]["met"] is False
    json64 = checks["fashion-json-64: >= 60% of the in-process batch-64 limit"]
    assert (json64["measured"], json64["met"]) == ("3,840 images/s = 77% of 5,000", True)
    assert checks["fashion-v2-binary-64: >= 80% of the in-process batch-64 limit"]["met"] is False
    keras = checks[">= 100x the naive Keras server (64 images a request)"]
    assert (keras["measured"], keras["met"]) == ("120.00x", True)
    worst = checks["dynamic batching on never more than 5% below off"]
    assert (worst["measured"], worst["met"]) == ("worst 0.91x (fashion-json, c=8)", False)
    best = checks["dynamic batching on >= 1.10x off somewhere at c >= 32"]
    assert (best["measured"], best["met"]) == ("best 1.20x (fashion-json, c=32)", True)
    assert checks["RSS per worker < 250 MB"]["measured"] == "91.0 MB"
    assert checks["start to ready < 3 s"]["met"] is True


def test_tail_latency_target_fails_when_p99_is_more_than_twice_p50():
    checks = {c["target"]: c for c in harness.targets(_document(3000, {}, p50=1.0, p99=2.5))}
    assert checks["native JSON, one image: p99 <= 2x p50"]["met"] is False


def test_batched_workloads_send_64_real_images_and_report_images_per_second():
    bodies = harness.payloads()
    instances = json.loads(bodies["pixels-64"])["instances"]
    assert len(instances) == harness.BATCH == 64
    assert instances[0] == json.loads(bodies["pixels"])["instances"][0]
    header_length = int(bodies["v2-binary-64-header"])
    header = json.loads(bodies["v2-binary-64"][:header_length])
    assert header["inputs"][0]["shape"] == [64, 28, 28, 1]
    assert len(bodies["v2-binary-64"]) - header_length == 64 * 28 * 28 * 4
    routes = harness.systems(9000, bodies, ROOT / "unused")
    assert "fashion-v2-binary-64" in routes["service"].routes
    assert routes["keras"].routes["fashion-json-64"][2] == bodies["pixels-64"]
    document = _document(100, {}, extra={("service", "fashion-json-64", 32): (50, 1, 2)})
    document["created_at"], document["command"] = "now", "python -m bench"
    document["machine"] = {"cores": 2, "platform": "linux", "python": "3.11"}
    document["settings"] = {
        "rounds_per_point": 1,
        "seconds_per_point": 1,
        "warmup_seconds": 1,
        "workers": 2,
        "threads": 2,
        "concurrency": [32],
        "workloads": ["fashion-json-64"],
    }
    document["targets"] = []
    document["systems"]["service"]["description"] = "this service"
    table = harness.markdown(document)
    assert "| service | 32 | 50.0 | 1.00 | 2.00 | 2.00 | 0 | 0.0 | 3,200 |" in table


def test_multipart_body_is_well_formed():
    ctype, body = harness._multipart("image", "a.png", b"\x89PNGdata")
    boundary = ctype.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert b'name="image"; filename="a.png"' in body
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())


PEERS = {"minimal", "keras", "bentoml"}


@pytest.mark.parametrize(
    ("marker", "folder", "systems"),
    [
        ("bench", "results", PEERS | {"service", "service-batching", "mlserver", "kserve"}),
        ("bench-round1", "results/round1", PEERS | {"service", "service-nobatch"}),
    ],
)
def test_docs_performance_tables_come_from_the_committed_results(marker, folder, systems):
    results = (ROOT / "bench" / folder / "results.md").read_text()
    page = (ROOT / "docs" / "performance.md").read_text()
    section = page.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 10
    for row in rows:
        assert row in results, row
    document = json.loads((ROOT / "bench" / folder / "results.json").read_text())
    assert document["settings"]["seconds_per_point"] >= 10
    assert document["settings"]["concurrency"] == [1, 8, 32, 64]
    assert set(document["systems"]) == systems
    assert document["command"] in page


def test_docs_thread_sweep_comes_from_the_committed_runs():
    page = (ROOT / "docs" / "performance.md").read_text()
    for threads in (2, 4):
        document = json.loads(
            (ROOT / "bench" / "results" / "threads" / str(threads) / "results.json").read_text()
        )
        assert document["settings"]["threads"] == threads
        cells = [f"| {threads} "]
        for system in ("service", "service-nobatch", "minimal"):
            (point,) = document["systems"][system]["workloads"]["fashion-json"]
            cells.append(
                f"| {point['rps']:,.0f} | {point['p99_ms']:.2f} / {point['p50_ms']:.2f} ms "
            )
        assert "".join(cells) + "|" in page


def test_docs_fast_path_before_after_comes_from_the_committed_runs():
    page = (ROOT / "docs" / "performance.md").read_text()
    runs = [
        json.loads((ROOT / "bench" / "results" / name).read_text())
        for name in ("before-after/fastpath-before.json", "round1/results.json")
    ]

    def point(document, system, concurrency):
        points = document["systems"][system]["workloads"]["fashion-json"]
        return next(p for p in points if p["concurrency"] == concurrency)

    for c in (1, 8, 32):
        (b, a), (mb, ma) = ([point(d, s, c) for d in runs] for s in ("service", "minimal"))
        row = (
            f"| concurrency {c} | {b['rps']:,.0f} | {a['rps']:,.0f} "
            f"| {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} "
            f"| {mb['rps']:,.0f} / {ma['rps']:,.0f} |"
        )
        assert row in page, row


def test_v2_bodies_are_what_tritonclient_sends_and_only_the_service_gets_them():
    import numpy as np

    from service.protocols.v2_tensors import parse_header, parse_inputs, split_body

    bodies = harness.payloads()
    header, binary = split_body(bodies["v2-binary"], bodies["v2-binary-header"].decode())
    document = parse_header(header)
    (tensor,) = parse_inputs(document["inputs"], binary)
    (as_json,) = parse_inputs(json.loads(bodies["v2-json"])["inputs"], b"")
    pixels = np.array(json.loads(bodies["pixels"])["instances"][0], np.float32) / 255
    assert tensor.shape == (1, 28, 28, 1)
    np.testing.assert_array_equal(tensor.data.reshape(28, 28), pixels)
    np.testing.assert_array_equal(as_json.data, tensor.data)
    assert document["parameters"] == {"binary_data_output": True}
    catalogue = harness.systems(1, bodies, ROOT / "unused", baseline=ROOT)
    for name, system in catalogue.items():
        has_v2 = {"fashion-v2-binary", "fashion-v2-json"} <= set(system.routes)
        assert has_v2 == (name.startswith("service") or name == "baseline"), name
    assert catalogue["baseline"].cwd == ROOT  # a tree with the V2 protocol
    older = harness.systems(1, bodies, ROOT / "unused", baseline=ROOT / "unused")["baseline"]
    assert "fashion-v2-json" not in older.routes  # a commit before it
    assert "fashion-json" in older.routes


def test_ratios_compare_points_of_the_same_run():
    point = {
        "concurrency": 8,
        "rps": 0,
        "p50_ms": 1,
        "p99_ms": 2,
        "p90_ms": 2,
        "errors": 0,
        "requests": 1,
    }
    document = {
        "settings": {"concurrency": [8]},
        "systems": {
            "service": {
                "workloads": {
                    "fashion-json": [{**point, "rps": 1000.0}],
                    "fashion-v2-binary": [{**point, "rps": 1250.0}],
                }
            },
            "baseline": {"workloads": {"fashion-json": [{**point, "rps": 800.0}]}},
        },
    }
    ratios = dict(harness._ratios(document))
    assert ratios["service / baseline, fashion-json"] == {8: 1.25}
    assert ratios["service V2 binary / service native JSON"] == {8: 1.25}
    assert "service / minimal, fashion-json" not in ratios  # not measured in this run


def test_docs_round_three_tables_come_from_the_committed_runs():
    page = (ROOT / "docs" / "performance.md").read_text()
    section = page.split("<!-- bench-round3:start -->")[1].split("<!-- bench-round3:end -->")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    sources = (ROOT / "bench" / "results" / "instructions" / "results.md").read_text() + (
        ROOT / "bench" / "results" / "protocols" / "results.md"
    ).read_text()
    assert len(rows) > 12
    for row in rows:
        assert row in sources, row
    for name in ("instructions", "protocols"):
        document = json.loads((ROOT / "bench" / "results" / name / "results.json").read_text())
        assert document["command"] in " ".join(section.split())
