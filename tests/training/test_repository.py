"""training.repository: next version, atomic publish, nothing overwritten or left behind."""

import pytest

from training.repository import RepositoryError, next_version, staged_version


def test_next_version_starts_at_one_and_skips_gaps(tmp_path):
    assert next_version(tmp_path, "m") == 1
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "4").mkdir()
    assert next_version(tmp_path, "m") == 5


def test_staged_version_publishes_atomically(tmp_path):
    with staged_version(tmp_path, "m") as (staging, version):
        assert version == 1
        assert staging.name.startswith(".staging-")
        (staging / "model.onnx").write_bytes(b"x")
        assert not (tmp_path / "m" / "1").exists()  # invisible until the block ends
    assert (tmp_path / "m" / "1" / "model.onnx").read_bytes() == b"x"
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def _publish_failing_export(root):
    with staged_version(root, "m") as (staging, _):
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export broke")


def test_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="export broke"):
        _publish_failing_export(tmp_path)
    assert not (tmp_path / "m").exists()  # not even an empty model folder


def _publish_racing_another_run(root):
    with staged_version(root, "m") as (staging, version):
        (staging / "model.onnx").write_bytes(b"new")
        final = root / "m" / str(version)
        final.mkdir()  # a concurrent run published the same number meanwhile
        (final / "model.onnx").write_bytes(b"old")


def test_existing_version_is_never_overwritten(tmp_path):
    with pytest.raises(RepositoryError, match="not overwriting"):
        _publish_racing_another_run(tmp_path)
    assert (tmp_path / "m" / "1" / "model.onnx").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]
