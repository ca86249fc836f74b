"""``python -m training`` as a user runs it."""

import json
import subprocess
import sys

import pytest

from training.cli import _int_list, main


def test_datasets_command_lists_defaults(capsys):
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    configs = dict(line.split(": ", 1) for line in lines)
    assert set(configs) == {"circles", "moons", "blobs", "digits", "fashion-mnist"}
    assert json.loads(configs["circles"])["hidden"] == [4, 4]
    assert json.loads(configs["blobs"])["hidden"] == [25, 15]
    assert json.loads(configs["fashion-mnist"])["arch"] == "cnn"


def test_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "imagenet"])
    assert info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_hidden_sizes_parse():
    assert _int_list("25-15") == (25, 15)
    assert _int_list("64,32") == (64, 32)


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "lr-find", "evaluate", "datasets"):
        assert command in out.stdout


def test_missing_fashion_data_exits_with_instructions(tmp_path, monkeypatch, caplog):
    def offline():
        raise OSError("no network here")

    monkeypatch.setattr("training.datasets._keras_fashion_mnist", offline)
    code = main(
        [
            "train",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--repository",
            str(tmp_path / "repo"),
        ]
    )
    assert code == 1
    assert "apt-get install dataset-fashion-mnist" in caplog.text
    assert not (tmp_path / "repo").exists()  # nothing published, nothing half-written
