"""Re-score a published model version with onnxruntime on its dataset's real test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.contract import metadata as contract
from service.contract.postprocessing import predicted_indices
from service.contract.preprocessing import spec_from_dict
from training import calibration, datasets, export, report, trainer


@dataclass(frozen=True)
class Evaluation:
    """Accuracy measured now against the accuracy recorded at training time."""

    name: str
    version: int
    n_samples: int
    accuracy: float
    recorded_accuracy: float
    onnx_bytes: int


def evaluate_version(version_dir: Path, data_dir: str | None = None) -> Evaluation:
    """Validate metadata and checksum, rebuild the test tensor, run onnxruntime, score."""
    meta = contract.read(version_dir)
    dataset = datasets.load(meta["dataset"]["name"], data_dir)
    if spec_from_dict(meta["preprocessing"]) != dataset.spec:
        raise contract.MetadataError(
            f"{version_dir}: recorded preprocessing differs from the dataset's current one"
        )
    if list(dataset.class_names) != meta["classes"]:
        raise contract.MetadataError(f"{version_dir}: recorded classes differ from the dataset's")
    x_test = trainer.to_tensor(dataset, dataset.x_test)
    logits = export.onnx_logits(Path(version_dir) / contract.MODEL_FILE, x_test)
    accuracy = float(np.mean(predicted_indices(logits) == dataset.y_test))
    return Evaluation(
        name=meta["name"],
        version=meta["version"],
        n_samples=len(dataset.y_test),
        accuracy=accuracy,
        recorded_accuracy=meta["metrics"]["test"]["accuracy"],
        onnx_bytes=(Path(version_dir) / contract.MODEL_FILE).stat().st_size,
    )


def calibrate_version(version_dir: Path, data_dir: str | None = None) -> dict:
    """Fit temperature scaling for a version trained before it existed: the validation split
    is rebuilt from the recorded config (same fraction, same seed), the temperature fitted
    on onnxruntime's logits there, and ECE/NLL/Brier measured on the test set. The
    calibration block, the temperature and the reliability diagram are written in place
    (the ONNX file, and so its sha256, are untouched)."""
    version_dir = Path(version_dir)
    meta = contract.read(version_dir)
    dataset = datasets.load(meta["dataset"]["name"], data_dir)
    recorded = meta["training"]["config"]
    _, _, x_val, y_val = trainer.split_validation(
        dataset, recorded["validation_split"], recorded["seed"]
    )
    if len(y_val) != meta["dataset"]["n_validation"]:
        raise contract.MetadataError(f"{version_dir}: the validation split cannot be rebuilt")
    onnx_path = version_dir / contract.MODEL_FILE
    val_logits = export.onnx_logits(onnx_path, trainer.to_tensor(dataset, x_val))
    test_logits = export.onnx_logits(onnx_path, trainer.to_tensor(dataset, dataset.x_test))
    block = calibration.calibrate(val_logits, y_val, test_logits, dataset.y_test)
    meta["output"].pop("temperature", None)
    calibration.record(meta, block, test_logits, dataset.y_test, version_dir / "report")
    contract.write(version_dir, meta)
    report_dir = version_dir / "report"
    plots = sorted(p.name for p in report_dir.glob("*.png"))
    report.write_markdown(meta, plots, report_dir / "README.md")
    return block
