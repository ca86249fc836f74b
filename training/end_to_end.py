"""The whole way, on the user's own image files: raw file -> the service's decode and
preprocessing -> ONNX, against raw file -> Keras' standard loader (TensorFlow's decode,
``tf.image.resize`` with the declared interpolation, ``smart_resize`` / ``resize_with_pad``
for crop / pad) -> ``model.predict`` of the model as the user saved it.

The two must agree: the same predicted class on at least ``MIN_AGREEMENT`` of the files,
and probabilities within ``MAX_PROB_DIFF`` on all but 1% of them. Where they do not, the
steps are compared one by one to say which one differs (orientation, channel order,
resize, scale) and nothing is published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.images import orientation, upright
from service.contract.preprocessing import ImageSpec, scale_pixels

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.99
MAX_PROB_DIFF = 0.05  # on the 99th percentile of files: JPEG decoders differ (see docs)
_TF_FORMATS = {"PNG", "JPEG", "MPO", "GIF", "BMP"}  # what tf.io.decode_image reads


class EndToEndMismatch(ValueError):
    """The service would not answer as Keras does on the user's files; says which step."""


@dataclass(frozen=True)
class Reference:
    """Keras' loader's pixels (n, H, W, C) for the files TensorFlow can decode, which files,
    and which of them carry an EXIF orientation."""

    pixels: np.ndarray
    rows: list[int]
    turned: list[int]


def keras_loaded(files: list[Path], spec: ImageSpec, turn: bool = True) -> Reference:
    """Each file as ``image_dataset_from_directory`` loads it with the declared resize
    (turned upright first, as the service does, unless ``turn`` is False)."""
    import keras
    import tensorflow as tf
    from PIL import Image

    size = (spec.height, spec.width)
    method, antialias = spec.interpolation, spec.antialias
    pixels, rows, turned = [], [], []
    for i, path in enumerate(files):
        data = path.read_bytes()
        with Image.open(path) as opened:
            if opened.format not in _TF_FORMATS:
                continue  # HEIC, AVIF, WebP, TIFF: TensorFlow's loader cannot read them
            how = orientation(opened)
        image = tf.io.decode_image(data, channels=spec.channels, expand_animations=False)
        image = image.numpy()
        if how != 1:
            turned.append(i)
            if turn:
                image = np.ascontiguousarray(upright(image, how))
        if spec.resize == "crop" and not antialias:
            out = keras.preprocessing.image.smart_resize(image, size, interpolation=method)
        elif spec.resize == "crop":
            out = tf.image.resize(_keras_crop(image, size), size, method, antialias=True)
        elif spec.resize == "pad":
            out = tf.image.resize_with_pad(image, *size, method=method, antialias=antialias)
        else:
            out = tf.image.resize(image, size, method=method, antialias=antialias)
        pixels.append(np.asarray(out, np.float32))
        rows.append(i)
    shape = (0, spec.height, spec.width, spec.channels)
    return Reference(np.stack(pixels) if pixels else np.zeros(shape, np.float32), rows, turned)


def _keras_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from service.contract.resize import crop_box

    top, left, rows, cols = crop_box(image.shape[0], image.shape[1], *size)
    return image[top : top + rows, left : left + cols]


def check(
    loaded, spec: ImageSpec, files: list[Path], served_pixels: np.ndarray, served_probs: np.ndarray
) -> dict[str, Any]:
    """Compare the two paths on the files; the parity record, or EndToEndMismatch."""
    reference = keras_loaded(files, spec)
    if not reference.rows:
        return {"files": 0, "note": "no file TensorFlow's loader can read (PNG, JPEG, GIF, BMP)"}
    tensor = scale_pixels(reference.pixels, spec)
    keras_probs = np.asarray(loaded.reference_probabilities(tensor), np.float64)
    if keras_probs.shape[1] == 1:
        keras_probs = np.concatenate([1.0 - keras_probs, keras_probs], axis=1)
    ours = served_probs[reference.rows]
    agreement = float(np.mean(ours.argmax(axis=1) == keras_probs.argmax(axis=1)))
    diff = np.abs(ours - keras_probs).max(axis=1)
    p99 = float(np.quantile(diff, 0.99))
    record = {
        "files": len(reference.rows),
        "skipped": len(files) - len(reference.rows),
        "turned_upright": len(reference.turned),
        "class_agreement": agreement,
        "max_abs_prob_diff_p99": p99,
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_pixel_diff": float(
            np.abs(served_pixels[reference.rows] - _as_nhwc(reference.pixels)).mean()
        ),
    }
    if reference.turned:
        log.info(
            "%d of %d sample files carry an EXIF orientation: the service turns them upright; "
            "Keras' image_dataset_from_directory reads them as stored (train on upright files)",
            len(reference.turned),
            len(reference.rows),
        )
    if agreement < MIN_AGREEMENT or p99 > MAX_PROB_DIFF:
        step = _which_step(loaded, spec, files, reference, served_pixels, served_probs)
        raise EndToEndMismatch(
            f"on {len(reference.rows)} sample files the service and Keras' loader + "
            f"model.predict agree on {agreement:.1%} of the classes (at least "
            f"{MIN_AGREEMENT:.0%} needed), probabilities within {p99:.3g} on 99% (at most "
            f"{MAX_PROB_DIFF:g}): {step}"
        )
    return record


def _as_nhwc(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 4 else pixels[..., None]


def _which_step(loaded, spec, files, reference, served_pixels, served_probs) -> str:
    """The first step where the two paths part."""
    ours = _as_nhwc(served_pixels[reference.rows])
    theirs = reference.pixels
    gap = float(np.abs(ours - theirs).mean())
    if reference.turned:
        as_stored = keras_loaded(files, spec, turn=False).pixels
        if float(np.abs(ours - as_stored).mean()) < gap:
            return (
                "orientation: the files carry EXIF orientations, which the service applies and "
                "Keras' loader ignores; the model was trained on them as stored"
            )
    if spec.channels == 3 and float(np.abs(ours - theirs[..., ::-1]).mean()) < gap / 2:
        return "channel order: the model takes BGR, the service sends RGB"
    if gap > 3.0:
        return (
            f"resize: the service's pixels differ from Keras' loader's by {gap:.2f}/255 on "
            "average; declare the resize the model was trained with (--interpolation, "
            "--antialias, --resize)"
        )
    return (
        "scale: the pixels agree (within "
        f"{gap:.2f}/255) but the model does not: declare the preprocessing it was trained "
        "with outside the model (--scale, --offset, --mean, --std)"
    )
