"""A user's own data: a CSV table, a folder of images (one subfolder per class), arrays.

Everything comes back in raw units (feature values as written; pixels 0..255 as the
service's image preprocessing makes them), so the same arrays feed training, parity
checks and calibration through ``service.preprocessing``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import ApiError
from service.images import decode_image
from service.preprocessing import ImageSpec, PreprocessingError, image_to_pixels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 64_000_000


class DataError(ValueError):
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
            image, full_scale = decode_image(path.read_bytes(), MAX_IMAGE_PIXELS, str(path))
            pixels.append(image_to_pixels(image, spec, full_scale))
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
