"""``tf.image.resize``, ``resize_with_pad`` and Keras' ``smart_resize`` in numpy.

A model trained with Keras' own image loaders (``image_dataset_from_directory``,
``keras.utils.load_img`` + ``smart_resize``) saw pictures resized by TensorFlow's kernels:
half-pixel centres for ``bilinear``, ``nearest`` and ``bicubic`` (Keys' cubic, weights
outside the picture set to 0 and the rest renormalised), exact box averages for ``area``,
and ``ScaleAndTranslate`` (a kernel stretched by the downscale factor when ``antialias``)
for ``lanczos3``, ``lanczos5``, ``mitchellcubic`` and antialiased ``bilinear``/``bicubic``.
This module computes the same weights, so the service feeds such a model what it was
trained on (within 1/255 of TensorFlow per pixel: tests/training/test_resize_parity.py).

Each axis is resampled separately as a sum of a few gathered rows (short kernels) or
banded matrix products (antialiased downscales), in float32: a 12 MP photo costs reading
the rows the kernel touches, not converting the whole picture to floats first.
Pure numpy: nothing here imports TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "mitchellcubic")
ASPECTS = ("stretch", "crop", "pad")
# Bicubic without antialias weighs by a table of Keys' cubic at 1/1024 steps, as TF does.
_TABLE_SIZE = 1024
_F32 = np.float32


class ResizeError(ValueError):
    """A resize this module does not know (an unknown interpolation or aspect)."""


def _lanczos(radius: int):
    def kernel(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        px = np.pi * x
        with np.errstate(divide="ignore", invalid="ignore"):
            value = radius * np.sin(px) * np.sin(px / radius) / (px * px)
        value = np.where(x <= 1e-3, 1.0, value)
        return np.where(x > radius, 0.0, value)

    return kernel


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


def _mitchell_cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = (((7.0 / 6.0) * x - 2.0) * x) * x + 8.0 / 9.0
    far = (((-7.0 / 18.0) * x + 2.0) * x - 10.0 / 3.0) * x + 16.0 / 9.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


# kernel, radius: TensorFlow's sampling kernels (ScaleAndTranslate's kernel_type).
_KERNELS = {
    "lanczos3": (_lanczos(3), 3.0),
    "lanczos5": (_lanczos(5), 5.0),
    "mitchellcubic": (_mitchell_cubic, 2.0),
    "triangle": (_triangle, 1.0),
    "keyscubic": (_keys_cubic, 2.0),
}


def _scale_and_translate(n_in: int, n_out: int, kernel: str, antialias: bool):
    """(indices, weights), each (n_out, span): ScaleAndTranslate's spans, translation 0."""
    function, radius = _KERNELS[kernel]
    scale = _F32(n_out) / _F32(n_in)
    inv_scale = _F32(1.0) / scale
    kernel_scale = max(inv_scale, _F32(1.0)) if antialias else _F32(1.0)
    sample = (np.arange(n_out, dtype=_F32) + _F32(0.5)) * inv_scale
    reach = _F32(radius) * kernel_scale
    start = np.clip(np.ceil(sample - reach - _F32(0.5)), 0, n_in - 1).astype(np.int64)
    end = np.clip(np.floor(sample + reach - _F32(0.5)), 0, n_in - 1).astype(np.int64) + 1
    span = min(2 * math.ceil(reach) + 1, n_in)
    sample, kernel_scale = sample.astype(np.float64), float(kernel_scale)
    indices = start[:, None] + np.arange(span)[None, :]
    inside = indices < end[:, None]
    position = (indices + 0.5 - sample[:, None]) / kernel_scale
    weights = np.where(inside, function(position), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(np.abs(total) > 0, weights / np.where(total == 0, 1, total), 0.0)
    return np.minimum(indices, n_in - 1), weights


def _centres(n_in: int, n_out: int, shift: float) -> np.ndarray:
    """Where output pixels' centres fall in the input, in float32 as TensorFlow has them."""
    scale = _F32(n_in) / _F32(n_out)
    return (np.arange(n_out, dtype=_F32) + _F32(0.5)) * scale - _F32(shift)


def _bilinear(n_in: int, n_out: int):
    where = _centres(n_in, n_out, 0.5).astype(np.float64)
    floor = np.floor(where)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(where), n_in - 1).astype(np.int64)
    lerp = where - floor
    return np.stack([lower, upper], 1), np.stack([1.0 - lerp, lerp], 1)


def _nearest(n_in: int, n_out: int):
    index = np.floor(_centres(n_in, n_out, 0.0)).astype(np.int64)
    return np.clip(index, 0, n_in - 1)[:, None], np.ones((n_out, 1))


def _bicubic(n_in: int, n_out: int):
    where = _centres(n_in, n_out, 0.5)
    base = np.floor(where)
    offset = np.rint((where - base) * _F32(_TABLE_SIZE)).astype(np.float64)
    delta = offset / _TABLE_SIZE  # TF's table lookup
    taps = np.arange(-1, 3)
    wanted = base[:, None].astype(np.int64) + taps[None, :]
    weights = _keys_cubic(delta[:, None] - taps[None, :])
    weights = np.where((wanted >= 0) & (wanted < n_in), weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(wanted, 0, n_in - 1), weights


def _area(n_in: int, n_out: int):
    scale = _F32(n_in) / _F32(n_out)
    low = (np.arange(n_out, dtype=_F32) * scale).astype(np.float64)
    high = (np.arange(1, n_out + 1, dtype=_F32) * scale).astype(np.float64)
    first = np.floor(low).astype(np.int64)
    span = math.ceil(scale) + 1
    scale = float(scale)
    cells = first[:, None] + np.arange(span)[None, :]
    overlap = np.minimum(cells + 1, high[:, None]) - np.maximum(cells, low[:, None])
    weights = np.clip(overlap, 0.0, None) / scale
    return np.clip(cells, 0, n_in - 1), weights


def axis_weights(n_in: int, n_out: int, interpolation: str, antialias: bool):
    """(indices, weights) of shape (n_out, span) that ``tf.image.resize`` uses on one axis."""
    if interpolation == "bilinear":
        return (
            _scale_and_translate(n_in, n_out, "triangle", True)
            if antialias
            else _bilinear(n_in, n_out)
        )
    if interpolation == "bicubic":
        return (
            _scale_and_translate(n_in, n_out, "keyscubic", True)
            if antialias
            else _bicubic(n_in, n_out)
        )
    if interpolation == "nearest":
        return _nearest(n_in, n_out)
    if interpolation == "area":
        return _area(n_in, n_out)
    if interpolation in _KERNELS:
        return _scale_and_translate(n_in, n_out, interpolation, antialias)
    known = ", ".join(INTERPOLATIONS)
    raise ResizeError(f"unknown interpolation {interpolation!r}; one of {known}")


def _resample(image: np.ndarray, axis: int, indices: np.ndarray, weights: np.ndarray):
    """One axis of ``image`` resampled to ``len(indices)`` (float32)."""
    moved = np.moveaxis(image, axis, 0)
    n_out, span = weights.shape
    weights = weights.astype(_F32)
    if span <= 4:  # a few gathered rows: only the rows the kernel touches are read
        out = np.zeros((n_out, *moved.shape[1:]), _F32)
        shape = (n_out,) + (1,) * (moved.ndim - 1)
        for k in range(span):
            out += weights[:, k].reshape(shape) * moved[indices[:, k]]
        return np.moveaxis(out, 0, axis)
    # A long kernel (an antialiased shrink): each output row is one weighted sum of the
    # consecutive input rows under it, converted to float32 a slice at a time.
    flat = moved.reshape(moved.shape[0], -1)
    out = np.empty((n_out, flat.shape[1]), _F32)
    for i in range(n_out):
        first = int(indices[i, 0])
        taps = min(span, flat.shape[0] - first)
        out[i] = weights[i, :taps] @ flat[first : first + taps].astype(_F32, copy=False)
    return np.moveaxis(out.reshape(n_out, *moved.shape[1:]), 0, axis)


def resize(
    image: np.ndarray, height: int, width: int, interpolation: str = "bilinear", antialias=False
) -> np.ndarray:
    """``tf.image.resize(image, (height, width), method=interpolation, antialias=...)`` for
    (H, W) or (H, W, C) of any dtype: float32 (``nearest`` keeps the picture's values)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width) and interpolation != "mitchellcubic":
        return np.asarray(image, _F32)  # every other kernel is 1 at 0 and 0 at whole steps
    rows = axis_weights(h, height, interpolation, antialias)
    cols = axis_weights(w, width, interpolation, antialias)
    if interpolation == "nearest":
        return np.asarray(image[rows[0][:, 0]][:, cols[0][:, 0]], _F32)
    if rows[1].shape[1] <= 4 and cols[1].shape[1] <= 4:
        return _gathered(image, rows, cols)
    # Rows first (they lie along memory), unless the picture is a turned view of its file.
    if abs(image.strides[0]) >= abs(image.strides[1]):
        return _resample(_resample(image, 0, *rows), 1, *cols)
    return _resample(_resample(image, 1, *cols), 0, *rows)


def _gathered(image: np.ndarray, rows, cols) -> np.ndarray:
    """Short kernels on both axes, from the picture's own (uint8) pixels: a 12 MP photo to
    224x224 bilinear reads 4 pixels an output pixel; a picture near the output's size is
    summed rows first, then columns."""
    (r_index, r_weight), (c_index, c_weight) = rows, cols
    (height, r_span), (width, c_span) = r_weight.shape, c_weight.shape
    r_weight, c_weight = r_weight.astype(_F32), c_weight.astype(_F32)
    extra = (None,) * (image.ndim - 2)
    if image.shape[0] * image.shape[1] <= 16 * height * width:
        across = sum(
            r_weight[(slice(None), k, None, *extra)] * image[r_index[:, k]] for k in range(r_span)
        )
        return sum(
            c_weight[(None, slice(None), k, *extra)] * across[:, c_index[:, k]]
            for k in range(c_span)
        )
    if abs(image.strides[0]) >= abs(image.strides[1]):
        patch = image[r_index.reshape(-1)][:, c_index.reshape(-1)]
    else:  # a turned view of the picture (EXIF orientation): its rows lie along memory
        patch = image[:, c_index.reshape(-1)][r_index.reshape(-1)]
    patch = patch.reshape(height, r_span, width, c_span, *image.shape[2:])
    out = np.zeros((height, width, *image.shape[2:]), _F32)
    for a in range(r_span):
        for b in range(c_span):
            weight = r_weight[:, a, None] * c_weight[None, :, b]
            out += weight[(slice(None), slice(None), *extra)] * patch[:, a, :, b]
    return out


def crop_box(h: int, w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, rows, columns) that Keras' ``smart_resize`` keeps: the centre at the
    target's aspect ratio, sizes and offsets truncated as Keras truncates them."""
    rows = max(min(h, int(float(w * height) / width)), 1)
    cols = max(min(w, int(float(h * width) / height)), 1)
    return int(float(h - rows) / 2), int(float(w - cols) / 2), rows, cols


def pad_box(h: int, w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, rows, columns) of the resized picture inside ``resize_with_pad``'s frame,
    in float32 as TensorFlow computes them."""
    ratio = max(_F32(w) / _F32(width), _F32(h) / _F32(height))
    rows_f, cols_f = _F32(h) / ratio, _F32(w) / ratio
    top = max(0, math.floor((_F32(height) - rows_f) / _F32(2)))
    left = max(0, math.floor((_F32(width) - cols_f) / _F32(2)))
    return top, left, math.floor(rows_f), math.floor(cols_f)


def keras_resize(
    image: np.ndarray,
    height: int,
    width: int,
    interpolation: str = "bilinear",
    antialias: bool = False,
    aspect: str = "stretch",
) -> np.ndarray:
    """What Keras' loaders make of a decoded picture: ``stretch`` = ``tf.image.resize``,
    ``crop`` = ``crop_to_aspect_ratio`` (``smart_resize``), ``pad`` =
    ``pad_to_aspect_ratio`` (``tf.image.resize_with_pad``: zeros around, no antialias)."""
    h, w = image.shape[:2]
    if aspect == "stretch":
        return resize(image, height, width, interpolation, antialias)
    if aspect == "crop":
        top, left, rows, cols = crop_box(h, w, height, width)
        crop = image[top : top + rows, left : left + cols]
        return resize(crop, height, width, interpolation, antialias)
    if aspect == "pad":
        top, left, rows, cols = pad_box(h, w, height, width)
        inner = resize(image, rows, cols, interpolation, antialias)
        out = np.zeros((height, width, *image.shape[2:]), _F32)
        out[top : top + rows, left : left + cols] = inner
        return out
    raise ResizeError(f"unknown aspect {aspect!r}; one of {', '.join(ASPECTS)}")
