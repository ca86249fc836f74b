"""Raw features and pixels -> model input tensors, written once for training and serving.

Pure numpy: importable without Flask, onnxruntime or TensorFlow. Training feeds the network
through these functions, and the service turns requests into tensors with the same ones, so
an uploaded picture becomes exactly the tensor the network was trained on.

Units: a *pixel array* is in the dataset's raw units (0..``pixel_max``: 255 for
Fashion-MNIST, 16 for scikit-learn's digits). A decoded 8-bit image is 0..255 and is mapped
into those units by :func:`image_to_pixels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class PreprocessingError(ValueError):
    """Input that cannot become the model's tensor; the message says why."""


@dataclass(frozen=True)
class FeatureSpec:
    """A model that takes a flat vector of named numeric features."""

    n_features: int
    feature_names: tuple[str, ...]

    kind = "features"

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The model input's shape without the batch dimension."""
        return (self.n_features,)

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessing`` block of ``metadata.json``."""
        return {
            "kind": self.kind,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names),
        }


@dataclass(frozen=True)
class ImageSpec:
    """A model that takes a grayscale image, flattened (MLP) or NHWC (CNN)."""

    height: int
    width: int
    channels: int
    pixel_max: float
    layout: str  # "nhwc" or "flat"
    background: str  # "dark": light objects on a dark background, as in MNIST
    invert_light_background: bool

    kind = "image"

    @property
    def scale(self) -> float:
        """Factor from raw pixel units to the network's [0, 1] input."""
        return 1.0 / self.pixel_max

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The model input's shape without the batch dimension."""
        if self.layout == "flat":
            return (self.height * self.width * self.channels,)
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessing`` block of ``metadata.json``."""
        return {
            "kind": self.kind,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "pixel_max": self.pixel_max,
            "scale": self.scale,
            "layout": self.layout,
            "background": self.background,
            "invert_light_background": self.invert_light_background,
        }


Spec = FeatureSpec | ImageSpec


def spec_from_dict(block: Mapping[str, Any]) -> Spec:
    """Build a spec from the ``preprocessing`` block of ``metadata.json``."""
    if block["kind"] == "features":
        return FeatureSpec(int(block["n_features"]), tuple(block["feature_names"]))
    if block["kind"] == "image":
        return ImageSpec(
            height=int(block["height"]),
            width=int(block["width"]),
            channels=int(block["channels"]),
            pixel_max=float(block["pixel_max"]),
            layout=str(block["layout"]),
            background=str(block["background"]),
            invert_light_background=bool(block["invert_light_background"]),
        )
    raise PreprocessingError(f"unknown preprocessing kind {block['kind']!r}")


def _finite_float_array(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PreprocessingError(f"{what} must be numbers: {exc}") from None
    if not np.all(np.isfinite(array)):
        raise PreprocessingError(f"{what} must be finite numbers (no NaN or Infinity)")
    return array


def features_to_tensor(values: Any, spec: FeatureSpec) -> np.ndarray:
    """One feature vector or a batch -> float32 array of shape (n, n_features)."""
    array = _finite_float_array(values, "features")
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise PreprocessingError(
            f"features must be a vector or a list of vectors, got {array.ndim} dimensions"
        )
    if array.shape[0] == 0:
        raise PreprocessingError("the batch is empty")
    if array.shape[1] != spec.n_features:
        raise PreprocessingError(
            f"expected {spec.n_features} features per instance, got {array.shape[1]}"
        )
    return array.astype(np.float32)


def pixels_to_tensor(values: Any, spec: ImageSpec) -> np.ndarray:
    """Pixel arrays in raw units, one or a batch, in any of the model's shapes -> the tensor.

    Accepted per instance: (H, W), (H, W, C) or the flat H*W*C vector.
    """
    array = _finite_float_array(values, "pixels")
    per_instance = {
        (spec.height, spec.width),
        (spec.height, spec.width, spec.channels),
        (spec.height * spec.width * spec.channels,),
    }
    if array.shape in per_instance:
        array = array[np.newaxis, ...]
    if array.ndim == 0 or array.shape[0] == 0:
        raise PreprocessingError("the batch is empty")
    if array.shape[1:] not in per_instance:
        shapes = " or ".join(str(list(s)) for s in sorted(per_instance, key=len))
        raise PreprocessingError(
            f"each image must have shape {shapes}, got {list(array.shape[1:])}"
        )
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > spec.pixel_max:
        raise PreprocessingError(
            f"pixel values must lie in [0, {spec.pixel_max:g}], got [{low:g}, {high:g}]"
        )
    array = array.reshape((array.shape[0], *spec.tensor_shape)) * spec.scale
    return array.astype(np.float32)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> float64 (H, W), same value range.

    Alpha is composited over white: a transparent background reads as paper.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise PreprocessingError(f"unsupported image array shape {list(image.shape)}")
    if image.shape[2] == 1:
        return image[:, :, 0]
    gray = image[:, :, :3] @ _LUMA
    if image.shape[2] == 4:
        top = max(float(image.max()), 1.0)
        full_scale = 255.0 if top <= 255.0 else 65535.0
        alpha = image[:, :, 3] / full_scale
        gray = gray * alpha + full_scale * (1.0 - alpha)
    return gray


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box-filter (area-average) resampling of a 2-D array to (height, width).

    Exact area weights in both directions, so downscaling keeps thin strokes and
    upscaling by an integer factor and back down is lossless.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape == (height, width):
        return image.copy()
    rows = _area_weights(image.shape[0], height)
    cols = _area_weights(image.shape[1], width)
    return rows @ image @ cols.T


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """Matrix (size_out, size_in) whose row i averages the input span of output pixel i."""
    edges = np.linspace(0.0, size_in, size_out + 1)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size_in)[None, :]
    overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def background_is_light(gray01: np.ndarray) -> bool:
    """True when the image's border is mostly light: a dark object on paper."""
    border = np.concatenate([gray01[0, :], gray01[-1, :], gray01[:, 0], gray01[:, -1]])
    return float(np.median(border)) > 0.5


def image_to_pixels(image: np.ndarray, spec: ImageSpec, full_scale: float = 255.0) -> np.ndarray:
    """A decoded image of any size -> (H, W) pixels in the model's raw units.

    Grayscale, area-resized to the model's size, and, for models trained on light objects
    on a dark background, inverted when the picture's background is light.
    """
    gray01 = to_grayscale(image) / full_scale
    if gray01.size == 0:
        raise PreprocessingError("the image has no pixels")
    if spec.invert_light_background and spec.background == "dark" and background_is_light(gray01):
        gray01 = 1.0 - gray01
    resized = resize_area(np.clip(gray01, 0.0, 1.0), spec.height, spec.width)
    return resized * spec.pixel_max


def images_to_tensor(images: Sequence[np.ndarray], spec: ImageSpec) -> np.ndarray:
    """Decoded 8-bit images -> the model's input batch."""
    if len(images) == 0:
        raise PreprocessingError("the batch is empty")
    pixels = np.stack([image_to_pixels(image, spec) for image in images])
    return pixels_to_tensor(pixels, spec)
