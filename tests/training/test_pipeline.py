"""End to end: train circles for a few epochs into a temporary repository, read it back."""

import json

import numpy as np
import pytest

from service.contract import metadata as contract
from service.contract.postprocessing import probabilities
from tests.helpers import MODELS
from training import datasets, export, trainer
from training.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    argv = ["train", "circles", "--repository", str(root), "--epochs", "5", "--quiet"]
    assert main(argv) == 0
    assert main([*argv, "--seed", "7"]) == 0
    return root


def test_versions_are_numbered_and_both_kept(repo):
    assert contract.versions(repo, "circles") == [1, 2]
    assert sorted(p.name for p in (repo / "circles").iterdir()) == ["1", "2"]


def test_metadata_reads_back_valid_and_complete(repo):
    meta = contract.read(repo / "circles" / "1")  # schema + sha256 checked
    assert meta["name"] == "circles"
    assert meta["version"] == 1
    assert meta["task"] == "binary"
    assert meta["classes"] == ["outer", "inner"]
    assert meta["input"] == {"name": "input", "shape": [None, 2], "dtype": "float32"}
    assert meta["output"]["kind"] == "logits"
    assert meta["output"]["activation"] == "sigmoid"
    assert meta["preprocessing"] == {
        "kind": "features",
        "n_features": 2,
        "feature_names": ["x1", "x2"],
    }
    assert meta["training"]["config"]["epochs"] == 5
    assert meta["training"]["config"]["hidden"] == [4, 4]
    assert meta["training"]["epochs_run"] == 5
    assert 1 <= meta["training"]["best_epoch"] <= 5
    assert "--epochs 5" in meta["training"]["command"]
    assert meta["export"]["opset"] >= 17
    assert meta["export"]["parity"]["n_samples"] == 200
    assert meta["export"]["parity"]["max_abs_diff"] <= 1e-4
    assert meta["export"]["parity"]["argmax_mismatches"] == 0
    assert meta["versions"]["tensorflow"].startswith("2.21")
    assert meta["versions"]["tf2onnx"].startswith("1.17")
    assert meta["dataset"]["n_train"] + meta["dataset"]["n_validation"] == 800
    test = meta["metrics"]["test"]
    assert sum(map(sum, test["confusion_matrix"])) == 200
    assert set(test["per_class"]) == {"outer", "inner"}
    assert test["keras_accuracy"] == pytest.approx(test["accuracy"])


def test_seed_changes_the_model(repo):
    a = contract.read(repo / "circles" / "1")["export"]["onnx_sha256"]
    b = contract.read(repo / "circles" / "2")["export"]["onnx_sha256"]
    assert a != b


def test_recorded_accuracy_is_what_onnxruntime_gives(repo):
    vdir = repo / "circles" / "1"
    meta = contract.read(vdir)
    ds = datasets.load("circles")
    logits = export.onnx_logits(vdir / "model.onnx", trainer.to_tensor(ds, ds.x_test))
    accuracy = float(np.mean((logits[:, 0] > 0) == ds.y_test))
    assert meta["metrics"]["test"]["accuracy"] == accuracy
    probs = probabilities(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_report_files_written(repo):
    report = repo / "circles" / "1" / "report"
    for name in (
        "training_curves.png",
        "confusion_matrix.png",
        "samples.png",
        "decision_boundary.png",
        "reliability.png",
    ):
        data = (report / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name
        assert len(data) > 5000, name
    text = (report / "README.md").read_text()
    assert "# circles v1" in text
    assert "| outer |" in text


def test_feature_models_record_the_training_range(repo):
    """The console draws a 2-feature model's plane over the training data's range; the
    committed feature models have it too (the same datasets, rebuilt from their seeds)."""

    def expected(name):
        x = datasets.load(name).x_train
        return {
            "min": [round(float(v), 6) for v in x.min(axis=0)],
            "max": [round(float(v), 6) for v in x.max(axis=0)],
        }

    assert contract.read(repo / "circles" / "1")["dataset"]["feature_range"] == expected("circles")
    for name in ("circles", "blobs"):
        assert contract.read(MODELS / name / "1")["dataset"]["feature_range"] == expected(name)


def test_metadata_file_is_plain_json(repo):
    raw = json.loads((repo / "circles" / "2" / "metadata.json").read_text())
    assert raw["training"]["config"]["seed"] == 7


def test_trained_models_are_calibrated_on_their_validation_split(repo):
    meta = contract.read(repo / "circles" / "1")
    block = meta["metrics"]["calibration"]
    assert block["fitted_on"] == f"validation split ({meta['dataset']['n_validation']} samples)"
    assert block["validation_nll"]["after"] <= block["validation_nll"]["before"]
    assert meta["output"].get("temperature", 1.0) == (
        block["temperature"] if block["applied"] else 1.0
    )
    assert meta["source"] == {"kind": "trained"}
    assert (
        "calibration: temperature" in (repo / "circles" / "1" / "report" / "README.md").read_text()
    )


def test_calibrate_command_rebuilds_the_same_calibration_for_an_older_version(repo, capsys):
    """A version without calibration (as trained before it existed) gets exactly the block
    its own training run would have recorded: the validation split is rebuilt from the seed."""
    vdir = repo / "circles" / "2"
    meta = contract.read(vdir)
    recorded = meta["metrics"].pop("calibration")
    meta["output"].pop("temperature", None)
    (vdir / "metadata.json").write_text(json.dumps(meta))
    assert main(["calibrate", "--repository", str(repo)]) == 0
    assert "circles v2: temperature" in capsys.readouterr().out
    again = contract.read(vdir)["metrics"]["calibration"]
    assert again["temperature"] == pytest.approx(recorded["temperature"], rel=1e-9)
    for when in ("before", "after"):
        assert again["test"][when] == pytest.approx(recorded["test"][when])
    assert contract.read(vdir)["export"]["onnx_sha256"] == meta["export"]["onnx_sha256"]
