"""bench/scaling.py: the repositories it builds and the targets it reads (the measurement
itself starts the service 3 times with up to 100 models: it is run by hand, not here)."""

from __future__ import annotations

import json

from bench import scaling
from tests.helpers import MODELS


def test_repositories_cycle_through_every_committed_version(tmp_path):
    sources = scaling.committed_versions()
    assert len(sources) >= 5
    assert (MODELS / "fashion-mnist" / "2") in sources
    total = scaling.make_repository(tmp_path, 7)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"m{i:03d}" for i in range(7)]
    for i, name in enumerate(names):
        meta = json.loads((tmp_path / name / "1" / "metadata.json").read_text())
        assert (meta["name"], meta["version"]) == (name, 1)
        source = sources[i % len(sources)]
        assert (tmp_path / name / "1" / "model.onnx").read_bytes() == (
            source / "model.onnx"
        ).read_bytes()
    assert total == sum((sources[i % len(sources)] / "model.onnx").stat().st_size for i in range(7))


def _point(count, ready, rss, onnx_mb):
    return {
        "versions": count,
        "onnx_bytes": onnx_mb * 2**20,
        "first_ready_s": ready / 2,
        "all_workers_ready_s": ready,
        "worker_rss_mb": rss,
    }


def test_targets_compare_100_versions_with_one():
    points = [_point(1, 1.0, [90.0, 91.0], 1), _point(100, 8.0, [300.0, 320.0], 120)]
    checks = {c["target"]: c for c in scaling.targets(points)}
    ready = checks["100 versions: ready <= 10 s after start"]
    assert (ready["measured"], ready["met"]) == ("8.00 s", True)
    rss = checks["100 versions: RSS per worker <= 1-version RSS + 2x the ONNX bytes loaded"]
    assert (rss["measured"], rss["met"]) == ("320.0 MB (allowed 331.0 MB)", True)
    slow = scaling.targets([_point(1, 1.0, [90.0], 1), _point(100, 12.5, [500.0], 120)])
    assert [c["met"] for c in slow] == [False, False]
    assert scaling.targets([_point(10, 1.0, [90.0], 1)]) == []
    document = {
        "created_at": "now",
        "command": "python -m bench.scaling",
        "machine": "2 cores",
        "settings": {},
        "points": points,
        "targets": scaling.targets(points),
    }
    table = scaling.markdown(document)
    assert "| 100 | 120.0 | 4.00 | 8.00 | 300.0, 320.0 |" in table
    assert "| 100 versions: ready <= 10 s after start | 8.00 s | yes |" in table
