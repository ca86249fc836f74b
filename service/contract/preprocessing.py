"""Raw features and pixels -> model input tensors, written once for training and serving.

Pure numpy: importable without Flask, onnxruntime or TensorFlow. Training feeds the network
through these functions, and the service turns requests into tensors with the same ones, so
an uploaded picture becomes exactly the tensor the network was trained on.

Units: a *pixel array* is in the dataset's raw units (0..``pixel_max``: 255 for
Fashion-MNIST and for photos, 16 for scikit-learn's digits), shaped (H, W) or (H, W, C). The
model's tensor is ``(raw * scale + offset - mean) / std`` per channel, in the model's layout.
A *feature vector* is in its own units; a model trained on standardised features records
their mean and standard deviation, and the service standardises what clients send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from service.contract.pixels import (
    ImageError,
    background_is_light,
    fit_aspect,
    frame_object,
    to_grayscale,
    to_rgb,
)
from service.contract.tabular import Column, TabularError, encode_rows


class PreprocessingError(ValueError):
    """Input that cannot become the model's tensor; the message says why."""


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class FeatureSpec:
    """A model that takes a flat vector of named numeric features; with ``columns``
    (``service.contract.tabular``), made from a table's raw values (categories, booleans,
    missing values) as training encoded them."""

    n_features: int
    feature_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None  # standardisation, when the model was fitted on it
    std: tuple[float, ...] | None = None
    columns: tuple[Column, ...] | None = None

    kind = "features"

    @cached_property
    def raw_columns(self) -> tuple[Column, ...]:
        """The raw features clients name: the columns, or one number per feature."""
        if self.columns is not None:
            return self.columns
        return tuple(Column(name, "numeric") for name in self.feature_names)

    @property
    def plain(self) -> bool:
        """Whether the raw features are the model's features (numbers, nothing encoded)."""
        return self.columns is None or all(
            c.kind == "numeric" and not c.indicator for c in self.columns
        )

    def rows_to_tensor(self, rows: Sequence[Any], what: str) -> np.ndarray:
        """Rows of raw values (objects by feature name, or lists in order) -> the tensor."""
        if len(rows) == 0:
            raise PreprocessingError("the batch is empty")
        try:
            encoded = encode_rows(rows, self.raw_columns, what)
        except TabularError as exc:
            raise PreprocessingError(str(exc)) from None
        with np.errstate(over="ignore"):  # beyond float32: inf, refused before inference
            return self.standardise(encoded).astype(np.float32)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The model input's shape without the batch dimension."""
        return (self.n_features,)

    def standardise(self, array: np.ndarray) -> np.ndarray:
        """Raw feature values -> the model's units (identity without standardisation)."""
        if self.mean is None or self.std is None:
            return array
        return (array - np.asarray(self.mean)) / np.asarray(self.std)

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessing`` block of ``metadata.json``."""
        block: dict[str, Any] = {
            "kind": self.kind,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names),
        }
        if self.mean is not None and self.std is not None:
            block.update(mean=list(self.mean), std=list(self.std))
        if self.columns is not None:
            block["columns"] = [c.to_dict() for c in self.columns]
        return block


@dataclass(frozen=True)
class ImageSpec:
    """A model that takes images: 1 or 3 channels, flattened, NHWC or NCHW.

    ``background`` is what the model was trained on: ``dark`` (light objects on a dark
    ground, as in MNIST), ``light``, or ``none`` (whole scenes); with
    ``invert_light_background`` a picture whose background is the other way round is
    inverted. ``framing="object"`` finds the object on a photo and frames it as the dataset
    frames its items (its longer side spanning ``fill`` of the frame); otherwise ``resize``
    says how a picture of another aspect ratio is fitted: ``stretch``, ``pad`` or ``crop``.

    ``interpolation`` (with ``antialias``) declares a resize as TensorFlow and Keras' image
    loaders do it (``service.contract.resize``): ``crop`` is then Keras'
    ``crop_to_aspect_ratio``, ``pad`` its ``pad_to_aspect_ratio`` (black bars), and colours
    are converted as ``tf.image.decode_image`` converts them (alpha dropped). Without it
    (models trained here before it existed) pictures are area-averaged, padded with their
    border's colour and composited over white, as they were.
    """

    height: int
    width: int
    channels: int
    pixel_max: float
    layout: str  # "nhwc", "nchw" or "flat"
    background: str  # "dark", "light" or "none"
    invert_light_background: bool
    scale: float = 0.0  # multiplier on raw pixels; 0 means 1 / pixel_max
    offset: float = 0.0
    mean: tuple[float, ...] | None = None  # per channel, after scale and offset
    std: tuple[float, ...] | None = None
    resize: str = "stretch"
    framing: str = "none"  # "object": photos of one object are cropped to it
    fill: float = 1.0
    interpolation: str | None = None  # as tf.image.resize names it; None: the area resize
    antialias: bool = False

    kind = "image"

    def __post_init__(self) -> None:
        if not self.scale:
            object.__setattr__(self, "scale", 1.0 / self.pixel_max)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The model input's shape without the batch dimension."""
        if self.layout == "flat":
            return (self.height * self.width * self.channels,)
        if self.layout == "nchw":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessing`` block of ``metadata.json``."""
        block: dict[str, Any] = {
            "kind": self.kind,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "pixel_max": self.pixel_max,
            "scale": self.scale,
            "offset": self.offset,
            "layout": self.layout,
            "background": self.background,
            "invert_light_background": self.invert_light_background,
            "resize": self.resize,
            "framing": self.framing,
        }
        if self.framing == "object":
            block["fill"] = self.fill
        if self.interpolation is not None:
            block.update(interpolation=self.interpolation, antialias=self.antialias)
        if self.mean is not None and self.std is not None:
            block.update(mean=list(self.mean), std=list(self.std))
        return block


Spec = FeatureSpec | ImageSpec


def spec_from_dict(block: Mapping[str, Any]) -> Spec:
    """Build a spec from the ``preprocessing`` block of ``metadata.json``."""
    if block["kind"] == "features":
        return FeatureSpec(
            int(block["n_features"]),
            tuple(block["feature_names"]),
            _floats(block.get("mean")),
            _floats(block.get("std")),
            None if "columns" not in block else tuple(map(Column.from_dict, block["columns"])),
        )
    if block["kind"] == "image":
        return ImageSpec(
            height=int(block["height"]),
            width=int(block["width"]),
            channels=int(block["channels"]),
            pixel_max=float(block["pixel_max"]),
            layout=str(block["layout"]),
            background=str(block["background"]),
            invert_light_background=bool(block["invert_light_background"]),
            scale=float(block["scale"]),
            offset=float(block.get("offset", 0.0)),
            mean=_floats(block.get("mean")),
            std=_floats(block.get("std")),
            resize=str(block.get("resize", "stretch")),
            framing=str(block.get("framing", "none")),
            fill=float(block.get("fill", 1.0)),
            interpolation=block.get("interpolation"),
            antialias=bool(block.get("antialias", False)),
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
    """One feature vector or a batch in raw units -> float32 array of shape (n, n_features)."""
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
    with np.errstate(over="ignore"):  # beyond float32: inf, refused before inference
        return spec.standardise(array).astype(np.float32)


def pixels_to_tensor(values: Any, spec: ImageSpec) -> np.ndarray:
    """Pixel arrays in raw units, one or a batch, in any of the model's shapes -> the tensor.

    Accepted per instance: (H, W, C), the flat H*W*C vector, and (H, W) for one channel.
    """
    array = _finite_float_array(values, "pixels")
    h, w, c = spec.height, spec.width, spec.channels
    per_instance = {(h, w, c), (h * w * c,)} | ({(h, w)} if c == 1 else set())
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
    return scale_pixels(array, spec)


def scale_pixels(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """A batch of pixels in raw units (n, H, W[, C]) or flat -> the model's tensor:
    ``raw * scale + offset``, standardised per channel, in the model's layout (float32).

    A declared resize's kernels may ring a little beyond 0..pixel_max, as TensorFlow's do;
    the values are kept as they are, as Keras kept them in training."""
    h, w, c = spec.height, spec.width, spec.channels
    array = np.asarray(pixels, np.float64).reshape((-1, h, w, c)) * spec.scale
    if spec.offset:
        array += spec.offset
    if spec.mean is not None and spec.std is not None:
        array = (array - np.asarray(spec.mean)) / np.asarray(spec.std)
    if spec.layout == "nchw":
        array = array.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(array.reshape((array.shape[0], *spec.tensor_shape)), np.float32)


def _inverted(image01: np.ndarray, spec: ImageSpec) -> bool:
    """Whether a picture's background is the opposite of the one the model was trained on."""
    if not spec.invert_light_background or spec.background == "none":
        return False
    light = background_is_light(image01 if image01.ndim == 2 else image01.mean(axis=2))
    return light if spec.background == "dark" else not light


def image_to_pixels(image: np.ndarray, spec: ImageSpec, full_scale: float = 255.0) -> np.ndarray:
    """A decoded image of any size -> (H, W) or (H, W, 3) pixels in the model's raw units.

    Grayscale or RGB as the model takes it; inverted when its background is the opposite of
    the model's; a photo (any size but the model's own) of one object is framed like the
    dataset's items when the model asks for it; otherwise area-resized by ``spec.resize``.
    """
    try:
        if spec.channels == 1:
            image01 = to_grayscale(image) / full_scale
        else:
            image01 = to_rgb(image) / full_scale
    except ImageError as exc:
        raise PreprocessingError(str(exc)) from None
    if image01.size == 0:
        raise PreprocessingError("the image has no pixels")
    image01 = np.clip(image01, 0.0, 1.0)
    own_size = image01.shape[:2] == (spec.height, spec.width)
    if spec.framing == "object" and image01.ndim == 2 and not own_size:
        framed = frame_object(image01, spec.height, spec.width, spec.fill)
        out = framed if spec.background == "dark" else 1.0 - framed
    else:
        if _inverted(image01, spec):
            image01 = 1.0 - image01
        out = fit_aspect(image01, spec.height, spec.width, spec.resize)
    return np.clip(out, 0.0, 1.0) * spec.pixel_max  # running sums may overshoot by 1 ulp


def images_to_tensor(images: Sequence[np.ndarray], spec: ImageSpec) -> np.ndarray:
    """Decoded 8-bit images -> the model's input batch."""
    if len(images) == 0:
        raise PreprocessingError("the batch is empty")
    pixels = np.stack([image_to_pixels(image, spec) for image in images])
    return pixels_to_tensor(pixels, spec)
