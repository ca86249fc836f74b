"""load dataset -> build -> fit -> export -> parity check -> evaluate -> report -> publish."""

from __future__ import annotations

import logging
import platform
from datetime import UTC, datetime
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import metadata as contract
from service.contract.postprocessing import predicted_indices
from service.contract.preprocessing import FeatureSpec
from training import architectures, calibration, datasets, export, report, repository, trainer
from training.config import TrainConfig

log = logging.getLogger(__name__)


def library_versions(tensorflow: bool = True) -> dict[str, str]:
    """Versions of everything that shaped the model file (TensorFlow's only where used)."""
    versions = {"python": platform.python_version()}
    keras_side = [("tensorflow", "tensorflow"), ("keras", "keras"), ("tf2onnx", "tf2onnx")]
    for dist, key in (
        *(keras_side if tensorflow else []),
        ("onnx", "onnx"),
        ("onnxruntime-gpu", "onnxruntime"),
        ("numpy", "numpy"),
        ("scikit-learn", "scikit-learn"),
    ):
        try:
            versions[key] = pkg_metadata.version(dist)
        except pkg_metadata.PackageNotFoundError:
            if key == "onnxruntime":  # the CPU-only wheel provides the same module
                versions[key] = pkg_metadata.version("onnxruntime")
            else:
                raise
    return versions


def train_and_export(
    config: TrainConfig,
    repository_dir: Path,
    data_dir: str | None = None,
    verbose: int | str = "auto",
    command: str | None = None,
    dataset: datasets.Dataset | None = None,
) -> Path:
    """Run the whole pipeline and publish ``<repo>/<name>/<next version>``; return its path.

    The dataset is the built-in one the config names, unless a user's own is given.
    """
    dataset = dataset or datasets.load(config.dataset, data_dir)
    log.info(
        "dataset %s: %d train, %d test", dataset.name, len(dataset.x_train), len(dataset.x_test)
    )
    fitted = trainer.fit(config, dataset, verbose=verbose)
    x_test = trainer.to_tensor(dataset, dataset.x_test)
    keras_logits = export.keras_logits(fitted.model, x_test)

    with repository.staged_version(repository_dir, config.model_name) as (staging, version):
        onnx_path = export.export_onnx(fitted.model, staging / contract.MODEL_FILE)
        parity, onnx_logits = export.check_parity(keras_logits, onnx_path, x_test)
        metrics = report.classification_metrics(onnx_logits, dataset.y_test, dataset.class_names)
        keras_pred = predicted_indices(keras_logits)
        metrics["keras_accuracy"] = float(np.mean(keras_pred == dataset.y_test))
        plots = _plots(dataset, fitted, metrics, onnx_logits, onnx_path, staging / "report")
        meta = build_metadata(
            config,
            dataset,
            fitted,
            metrics,
            parity,
            onnx_path,
            version,
            command or "(library call: training.pipeline.train_and_export)",
        )
        val_logits = export.onnx_logits(onnx_path, fitted.x_validation)
        block = calibration.calibrate(val_logits, fitted.y_validation, onnx_logits, dataset.y_test)
        calibration.record(meta, block, onnx_logits, dataset.y_test, staging / "report")
        plots.append("reliability.png")
        contract.write(staging, meta)
        report.write_markdown(meta, plots, staging / "report" / "README.md")
    published = Path(repository_dir) / config.model_name / str(version)
    log.info(
        "published %s: test accuracy %.4f (onnxruntime), parity max |diff| %.3g",
        published,
        metrics["accuracy"],
        parity.max_abs_diff,
    )
    return published


def _plots(dataset, fitted, metrics, onnx_logits, onnx_path, report_dir: Path) -> list[str]:
    report.plot_training_curves(
        fitted.history, fitted.best_epoch, report_dir / "training_curves.png"
    )
    report.plot_confusion_matrix(
        metrics["confusion_matrix"], dataset.class_names, report_dir / "confusion_matrix.png"
    )
    report.plot_sample_predictions(dataset, onnx_logits, report_dir / "samples.png")
    plots = ["training_curves.png", "confusion_matrix.png", "samples.png"]
    if dataset.is_2d:
        report.plot_decision_boundary(
            lambda x: export.onnx_logits(onnx_path, trainer.to_tensor(dataset, x)),
            dataset,
            report_dir / "decision_boundary.png",
        )
        plots.append("decision_boundary.png")
    return plots


def build_metadata(
    config: TrainConfig,
    dataset: datasets.Dataset,
    fitted: trainer.FitResult,
    metrics: dict[str, Any],
    parity: export.Parity,
    onnx_path: Path,
    version: int,
    command: str,
) -> dict[str, Any]:
    """Everything the service needs and a user wants to see, in the schema's shape."""
    model = fitted.model
    n_classes = len(dataset.class_names)
    binary = dataset.task == "binary"
    return {
        "schema_version": contract.schema_version(dataset.spec.to_dict()),
        "name": config.model_name,
        "version": version,
        "description": _describe(dataset),
        "task": dataset.task,
        "classes": list(dataset.class_names),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {"kind": "trained"},
        "dataset": {
            "name": dataset.name,
            "n_train": fitted.n_train,
            "n_validation": fitted.n_validation,
            "n_test": len(dataset.y_test),
            "source": dataset.source,
            **_feature_range(dataset),
        },
        "input": {
            "name": architectures.INPUT_NAME,
            "shape": [None, *(int(d) for d in model.input_shape[1:])],
            "dtype": "float32",
        },
        "output": {
            "name": export.OUTPUT_NAME,
            "shape": [None, architectures.n_outputs(n_classes)],
            "dtype": "float32",
            "kind": "logits",
            "activation": "sigmoid" if binary else "softmax",
        },
        "preprocessing": dataset.spec.to_dict(),
        "architecture": {
            "kind": config.arch,
            "parameters": int(model.count_params()),
            "layers": architectures.describe(model),
        },
        "metrics": {"test": metrics},
        "training": {
            "config": config.to_dict(),
            "epochs_run": fitted.epochs_run,
            "best_epoch": fitted.best_epoch,
            "best_val_loss": fitted.best_val_loss,
            "duration_s": round(fitted.duration_s, 3),
            "command": command,
        },
        "export": {
            "tool": "tf2onnx.convert.from_function",
            "opset": export.OPSET,
            "parity": parity.to_dict(),
            "onnx_sha256": contract.sha256_file(onnx_path),
            "onnx_bytes": onnx_path.stat().st_size,
        },
        "versions": library_versions(),
        "files": {"model": contract.MODEL_FILE, "report": "report/README.md"},
    }


def _feature_range(dataset: datasets.Dataset) -> dict:
    """The training features' range, per feature (the console draws a 2-feature model's
    plane over it); nothing for image models."""
    if not isinstance(dataset.spec, FeatureSpec):
        return {}
    low, high = dataset.x_train.min(axis=0), dataset.x_train.max(axis=0)
    return {
        "feature_range": {
            "min": [round(float(v), 6) for v in low],
            "max": [round(float(v), 6) for v in high],
        }
    }


def _describe(dataset: datasets.Dataset) -> str:
    if isinstance(dataset.spec, FeatureSpec):
        return (
            f"{dataset.task} classifier on {dataset.spec.n_features} features "
            f"({', '.join(dataset.spec.feature_names)}) from {dataset.name}"
        )
    s = dataset.spec
    colour = "grayscale" if s.channels == 1 else "RGB"
    ground = {
        "dark": " (light objects on a dark background)",
        "light": " (dark objects on a light background)",
    }.get(s.background, "")
    size = f"{s.height}x{s.width}"
    return f"{dataset.task} classifier on {size} {colour} images{ground} from {dataset.name}"
