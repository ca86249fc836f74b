"""A user's own data: a CSV table, a folder of images (one subfolder per class), arrays.

Everything comes back in raw units (feature values as written; pixels 0..255 as the
service's image preprocessing makes them), so the same arrays feed training, parity
checks and calibration through ``service.contract.preprocessing``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.contract import tabular
from service.contract.images import model_pixels, open_image
from service.contract.preprocessing import FeatureSpec, ImageSpec, PreprocessingError
from service.errors import ApiError
from training.errors import Refused

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".avif",
    ".heic",
    ".heif",
}
MAX_IMAGE_PIXELS = 64_000_000


class DataError(Refused, ValueError):
    """The user's data cannot be read as asked; the message says what to fix."""


@dataclass(frozen=True)
class Table:
    """Feature columns (float64) and, when a target column was named, its labels."""

    x: np.ndarray
    labels: list[str] | None
    feature_names: tuple[str, ...]


def read_csv(path: Path, target: str | None = None, features: list[str] | None = None) -> Table:
    """A CSV with a header row; every feature column must be numeric."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if target is not None and target not in header:
        raise DataError(f"{path} has no column {target!r}; its columns: {', '.join(header)}")
    names = features or [h for h in header if h != target]
    missing = [n for n in names if n not in header]
    if missing:
        raise DataError(f"{path} has no column(s) {', '.join(map(repr, missing))}")
    if target in names:
        raise DataError(f"the target {target!r} cannot also be a feature")
    index = [header.index(n) for n in names]
    x = np.empty((len(rows) - 1, len(names)))
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {r} has {len(row)} cells, the header {len(header)}")
        for c, i in enumerate(index):
            try:
                x[r - 2, c] = float(row[i])
            except ValueError:
                raise DataError(
                    f"{path} line {r}, column {names[c]!r}: {row[i]!r} is not a number"
                ) from None
    if not np.isfinite(x).all():
        raise DataError(f"{path} has NaN or infinite feature values")
    labels = [row[header.index(target)].strip() for row in rows[1:]] if target else None
    return Table(x, labels, tuple(names))


@dataclass(frozen=True)
class ImageFolder:
    """Pixels (n, H, W[, C]) in 0..255, one label per image (its subfolder), the files."""

    pixels: np.ndarray
    labels: list[str] | None
    files: list[Path]


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(folder: Path, spec: ImageSpec, labelled: bool = True) -> ImageFolder:
    """Every image, decoded and preprocessed as the service would; labels from subfolders
    (``folder/<class>/<file>``) when ``labelled``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    pixels, labels = [], []
    for path in files:
        try:
            image = open_image(path.read_bytes(), MAX_IMAGE_PIXELS, str(path))
            pixels.append(model_pixels(image, spec, MAX_IMAGE_PIXELS, str(path)))
        except (PreprocessingError, ApiError, OSError) as exc:
            raise DataError(f"{path}: {getattr(exc, 'message', exc)}") from None
        labels.append(path.relative_to(folder).parts[0])
    if labelled and any(len(p.relative_to(folder).parts) != 2 for p in files):
        raise DataError(f"{folder}: put each image in a subfolder named after its class")
    return ImageFolder(np.stack(pixels), labels if labelled else None, files)


def encode_labels(labels: list[str], classes: list[str] | None = None):
    """Label strings -> (int array, class names); classes sorted unless given."""
    names = list(classes) if classes else sorted(set(labels))
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the classes {names}")
    return np.array([index[v] for v in labels], dtype=np.int64), names


def hold_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """(x_kept, x_held, y_kept, y_held): stratified where every class has two examples and
    the held-out part has room for each class, else a plain shuffled split (small data)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    held = math.ceil(len(y) * fraction) if fraction < 1 else int(fraction)
    stratify = y if counts[counts > 0].min() >= 2 and held >= np.count_nonzero(counts) else None
    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    if not 0 < test_fraction < 1 or round(len(y) * test_fraction) < 1:
        raise DataError(f"--test-fraction {test_fraction} leaves no test set of {len(y)} rows")
    return hold_out(x, y, test_fraction, seed)


def csv_dataset(
    path: Path,
    target: str,
    features: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 42,
    *,
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
    drop: list[str] | None = None,
    missing: str = "impute",
    encode: str = "one_hot",
    min_count: int = 2,
):
    """A CSV as it comes as a Dataset (``training.tables``): categories encoded, missing
    values imputed, features standardised, all with the training split's statistics and
    recorded in the contract's columns, so clients send the raw values by name."""
    from training import tables
    from training.datasets import Dataset

    table = tables.read_table(path, target, features, categorical, numeric, drop, missing)
    for note in table.notes:
        log.info("%s", note)
    y, classes = encode_labels(table.labels or [])
    if len(classes) < 2:
        raise DataError(f"{path}: the target {target!r} needs at least two classes")
    rows = np.arange(len(y))
    train, test, y_tr, y_te = _split(rows, y, test_fraction, seed)
    columns = tables.fit_columns(table, train, encode, min_count, missing)
    x = tabular.encode_rows(table.cells, columns, "rows")
    mean, std = tables.standardisation(x[train], columns)
    names = tabular.feature_names(columns)
    spec = FeatureSpec(
        len(names),
        names,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        None if all(c.kind == "numeric" and not c.indicator for c in columns) else columns,
    )
    kinds = Counter(table.kinds)
    source = (
        f"{Path(path).name}: target {target!r}, {len(y)} rows, {test_fraction:.0%} test; "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    )
    return Dataset(Path(path).stem, x[train], y_tr, x[test], y_te, tuple(classes), spec, source)


def image_dataset(folder: Path, spec: ImageSpec, test_fraction: float = 0.2, seed: int = 42):
    """A folder of class subfolders as a Dataset of raw pixels in the spec's size."""
    from training.datasets import Dataset

    images = read_image_folder(folder, spec, labelled=True)
    y, classes = encode_labels(images.labels or [])
    if len(classes) < 2:
        raise DataError(f"{folder}: one subfolder per class, at least two classes")
    pixels = images.pixels.reshape(len(y), spec.height, spec.width, spec.channels)
    x_tr, x_te, y_tr, y_te = _split(pixels.astype(np.float32), y, test_fraction, seed)
    source = f"{Path(folder).name}/: {len(y)} images in {len(classes)} class folders"
    return Dataset(Path(folder).name, x_tr, y_tr, x_te, y_te, tuple(classes), spec, source)


def colour_channels(folder: Path) -> int:
    """3 when any image in the folder has colour, else 1."""
    from PIL import Image

    for path in image_files(folder)[:200]:
        try:
            image = Image.open(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not an image Pillow can read ({exc})") from None
        with image:
            if image.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
                if (
                    np.abs(rgb[..., 0] - rgb[..., 1]).max() > 2
                    or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 2
                ):
                    return 3
    return 1
