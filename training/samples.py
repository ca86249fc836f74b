"""Data for an imported model's checks: the user's sample (``.npy``, ``.npz``, ``.csv``, an
image folder), or generated inputs over the declared range; and, where the sample has
labels, its evaluation and calibration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import (
    FeatureSpec,
    ImageSpec,
    PreprocessingError,
    Spec,
    features_to_tensor,
    pixels_to_tensor,
    scale_pixels,
)
from training import calibration, userdata

log = logging.getLogger(__name__)

GENERATED = 256


@dataclass(frozen=True)
class Data:
    """The model tensor for the checks, labels when known, and what it was; for an image
    folder, its files and their pixels (for the end-to-end check)."""

    tensor: np.ndarray
    labels: np.ndarray | None
    description: str
    files: list[Path] | None = None
    pixels: np.ndarray | None = None


def _to_tensor(raw: np.ndarray, spec: Spec) -> np.ndarray:
    try:
        if isinstance(spec, FeatureSpec):
            return features_to_tensor(raw, spec)
        return pixels_to_tensor(raw, spec)
    except PreprocessingError as exc:
        raise userdata.DataError(f"the sample does not fit the model: {exc}") from None


def generated(spec: Spec, n: int = GENERATED, seed: int = 0) -> np.ndarray:
    """Random raw inputs: pixels uniform over 0..pixel_max, features standard normal."""
    rng = np.random.default_rng(seed)
    if isinstance(spec, FeatureSpec):
        return rng.standard_normal((n, spec.n_features))
    return rng.uniform(0, spec.pixel_max, (n, spec.height, spec.width, spec.channels))


def for_parity(
    spec: Spec, path: Path | None, classes: list[str], target: str | None = None
) -> Data:
    """The user's sample as the model's tensor (labels from a CSV target, an npz ``y``, or
    class subfolders), else generated inputs."""
    if path is None:
        raw = generated(spec)
        what = "pixels uniform in [0, 255]" if isinstance(spec, ImageSpec) else "N(0, 1) features"
        return Data(_to_tensor(raw, spec), None, f"{len(raw)} generated inputs ({what})")
    path = Path(path)
    labels: list[str] | np.ndarray | None = None
    if path.is_dir():
        if not isinstance(spec, ImageSpec):
            raise userdata.DataError("an image folder is a sample for image models only")
        subfolders = any(p.is_dir() for p in path.iterdir())
        folder = userdata.read_image_folder(path, spec, labelled=subfolders)
        indices = None if folder.labels is None else _label_indices(folder.labels, classes)
        return Data(
            scale_pixels(folder.pixels, spec),  # as served: a kernel's ringing kept
            indices,
            f"{len(folder.files)} image files from {path.name}",
            folder.files,
            folder.pixels,
        )
    elif path.suffix == ".csv" and isinstance(spec, FeatureSpec) and spec.columns is not None:
        rows, labels = _table_rows(path, spec, target)
        try:
            tensor = spec.rows_to_tensor(rows, f"{path.name} rows")
        except PreprocessingError as exc:
            raise userdata.DataError(f"the sample does not fit the model: {exc}") from None
        indices = None if labels is None else _label_indices(labels, classes)
        return Data(tensor, indices, f"{len(rows)} rows from {path.name}")
    elif path.suffix == ".csv":
        names = list(spec.feature_names) if isinstance(spec, FeatureSpec) else None
        table = userdata.read_csv(path, target, names if names and _named(names) else None)
        raw, labels = table.x, table.labels
    elif path.suffix in (".npy", ".npz"):
        try:
            arrays = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise userdata.DataError(f"cannot read {path}: {exc}") from None
        if path.suffix == ".npz":
            if "x" not in arrays.files:
                raise userdata.DataError(
                    f"{path.name} holds {arrays.files}; expected 'x' (and 'y')"
                )
            raw, labels = arrays["x"], (arrays["y"] if "y" in arrays.files else None)
            if labels is not None and len(labels) != len(raw):
                raise userdata.DataError(f"{path.name}: {len(raw)} inputs but {len(labels)} labels")
        else:
            raw = arrays
    else:
        raise userdata.DataError(f"{path.name}: a sample is a .npy, .npz, .csv or image folder")
    if labels is not None:
        labels = _label_indices(labels, classes)
    return Data(_to_tensor(raw, spec), labels, f"{len(raw)} inputs from {path.name}")


def _table_rows(path: Path, spec: FeatureSpec, target: str | None):
    """A CSV's rows of raw values for a table model's columns (by header name), and the
    target's labels where one is named."""
    from training.tables import read_cells

    header, numbered = read_cells(path)
    names = [c.name for c in spec.raw_columns]
    absent = [n for n in [*names, *([target] if target else [])] if n not in header]
    if absent:
        raise userdata.DataError(f"{path.name} has no column {absent}; its columns: {header}")
    ragged = [line for line, cells in numbered if len(cells) != len(header)]
    if ragged:
        raise userdata.DataError(f"{path.name} line {ragged[0]}: not as many cells as the header")
    index = {name: header.index(name) for name in [*names, *([target] if target else [])]}
    rows = [{n: cells[index[n]] for n in names} for _, cells in numbered]
    labels = [cells[index[target]].strip() for _, cells in numbered] if target else None
    return rows, labels


def _named(names: list[str]) -> bool:
    """Whether feature names were given (not the x1, x2, ... default)."""
    return names != [f"x{i + 1}" for i in range(len(names))]


def _label_indices(labels, classes: list[str]) -> np.ndarray:
    values = np.asarray(labels)
    if values.dtype.kind in "iu":
        if values.min() < 0 or values.max() >= len(classes):
            raise userdata.DataError(f"labels must lie in 0..{len(classes) - 1}")
        return values.astype(np.int64)
    indices, _ = userdata.encode_labels([str(v) for v in values], classes)
    return indices


def evaluate(
    meta: dict[str, Any], output: OutputSpec, outputs: np.ndarray, data: Data, report_dir: Path
) -> list[str]:
    """With labels: test metrics and, for logits, temperature scaling fitted on half the
    sample (stratified) and scored on the other half. Updates ``meta``; returns plots."""
    from training.report import classification_metrics, plot_confusion_matrix

    if data.labels is None:
        return []
    fit_rows, test_rows = _halves(data.labels)
    metrics = classification_metrics(
        outputs[test_rows], data.labels[test_rows], meta["classes"], output
    )
    meta["metrics"]["test"] = metrics
    plot_confusion_matrix(
        metrics["confusion_matrix"], meta["classes"], report_dir / "confusion_matrix.png"
    )
    plots = ["confusion_matrix.png"]
    if output.has_logits and len(fit_rows):
        block = calibration.calibrate(
            outputs[fit_rows], data.labels[fit_rows], outputs[test_rows], data.labels[test_rows]
        )
        block["fitted_on"] = f"half of the sample ({len(fit_rows)} labelled inputs)"
        calibration.record(meta, block, outputs[test_rows], data.labels[test_rows], report_dir)
        plots.append("reliability.png")
    return plots


def _halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved per class: every other example of each class fits, the rest test."""
    fit, test = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        fit.extend(rows[0::2])
        test.extend(rows[1::2])
    if not test:
        return np.array([], dtype=np.int64), np.arange(len(labels))
    return np.array(sorted(fit), dtype=np.int64), np.array(sorted(test), dtype=np.int64)
