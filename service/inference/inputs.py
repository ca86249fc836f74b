"""What a request carries -> the model's input tensor, for every protocol.

A protocol codec wraps what it decoded in one of three input kinds, and the dataplane asks
it for the model's tensor under the model's request limits (checked before any decoding):

- :class:`JsonInstances`: the native API's JSON (feature vectors, pixel arrays in the
  dataset's raw units, base64 images, mixed in one batch);
- :class:`EncodedImages`: image files (uploads, V2 ``image`` BYTES, ``{"b64"}`` instances),
  counted against the images cap before any is opened, and decoded within a time budget;
- :class:`ModelTensor`: numbers in the model's shape (V2's FP32 input, TF Serving's
  instances): images in the model's units, features in their own.

Strict where numpy is lenient: ``np.asarray`` turns ``true`` and ``"1"`` into numbers, so
every leaf is checked to be a real JSON number first, with the path of the first bad one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from itertools import chain
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.contract.images import decode_base64, model_pixels, open_image
from service.contract.preprocessing import (
    FeatureSpec,
    ImageSpec,
    PreprocessingError,
    Spec,
    features_to_tensor,
    pixels_to_tensor,
    scale_pixels,
)
from service.errors import DecodeTimeout, ImageTooLarge, InvalidJSON, ValidationFailed

if TYPE_CHECKING:
    from service.inference.limits import Limits


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


MAX_INT_DIGITS = 18  # what fits in 64 bits, as orjson (which parses first) has it


def _bounded_int(text: str) -> int:
    """JSON integers of at most 18 digits: a 400-digit integer is refused at parse time, not
    left to overflow in numpy later."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"the integer {text[:24]}... has more than {MAX_INT_DIGITS} digits")
    return int(text)


def parse_json(body: bytes) -> Any:
    """Parse a JSON body; NaN/Infinity literals and bad encodings are 400 invalid_json.

    orjson parses valid bodies (several times faster than json on pixel arrays); a body it
    refuses is parsed again by json, whose messages say precisely what is wrong.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    if not body.strip():
        raise InvalidJSON("the request body is empty; expected a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_int=_bounded_int)
    except RecursionError:
        raise InvalidJSON("the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"malformed JSON: {exc}") from None


_NUMBER_TYPES = {int, float}


def check_numbers(value: Any, path: str) -> None:
    """Every leaf must be an int or float (bool is not a number here).

    Checked a nesting level at a time with C-speed ``set(map(type, ...))``; only a failing
    level is walked in Python, to name the first bad value.
    """
    level = [value]
    while level:
        kinds = set(map(type, level))
        if kinds <= _NUMBER_TYPES:
            return  # finiteness is checked on the array (JSON's NaN/Infinity never get here)
        if kinds != {list}:
            _locate_bad_value(value, path)
            return  # mixed nesting of numbers and lists: numpy reports the shape
        level = list(chain.from_iterable(level))


def _locate_bad_value(value: Any, path: str) -> None:
    kind = type(value)
    if kind is float or kind is int:
        return
    if kind is list:
        for i, item in enumerate(value):
            _locate_bad_value(item, f"{path}[{i}]")
        return
    shown = json.dumps(value)[:40] if value is None or kind in (str, bool) else kind.__name__
    raise ValidationFailed(f"{path} must be a number, got {shown}")


def is_b64_object(item: Any) -> bool:
    """``{"b64": ...}``: how TF Serving and the native API wrap binary values in JSON."""
    return type(item) is dict and len(item) == 1 and "b64" in item


def _is_image_ref(item: Any) -> bool:
    return isinstance(item, str) or is_b64_object(item)


def _images(
    blobs: Sequence[tuple[str, bytes | str]],
    spec: ImageSpec,
    limits: Limits,
    base64: bool = False,
    timings: list[float] | None = None,
) -> list:
    """Each image as the model's tensor rows, under the images cap (counted before anything
    is opened), the per-image and per-request pixel limits (every header is read before any
    image is decoded) and the decode time budget (checked before each image's next step:
    what cannot be cut short is one image's own decoding). ``base64``: the blobs are base64
    text, decoded one at a time once the count is known to fit."""
    limits.check_images(len(blobs))
    started = time.perf_counter()
    # With one image, the smaller limit holds; with several, each is held to the per-image
    # limit and all together to the request's.
    per_image = (
        limits.max_image_pixels
        if len(blobs) > 1
        else min(limits.max_image_pixels, limits.max_request_pixels)
    )
    opened = []
    for what, data in blobs:
        if opened:
            _within_budget(started, limits, len(blobs))
        raw = decode_base64(data, what) if base64 else data
        opened.append(open_image(raw, per_image, what))
    if len(opened) > 1:
        total = sum(image.width * image.height for image in opened)
        if total > limits.max_request_pixels:
            raise ImageTooLarge(
                f"the request's {len(blobs)} images hold {total:,} pixels; the limit is "
                f"{limits.max_request_pixels:,} per request",
                details={"pixels": total, "max_request_pixels": limits.max_request_pixels},
            )
    rows = []
    for (what, _), image in zip(blobs, opened, strict=True):
        _within_budget(started, limits, len(blobs))
        rows.append(_pixels(image, spec, per_image, what, timings))
    return rows


def _within_budget(started: float, limits: Limits, images: int) -> None:
    """Refuse to go on once a request's images have taken their time budget."""
    if time.perf_counter() - started > limits.decode_timeout_s:
        raise DecodeTimeout(
            f"the request's {images:,} images took more than {limits.decode_timeout_s:g} s "
            "to decode (SERVING_DECODE_TIMEOUT_S); send fewer or smaller images",
            details={"images": images, "decode_timeout_s": limits.decode_timeout_s},
        )


class JsonInstances:
    """The native JSON body's ``instances`` / ``instance`` / ``images`` / ``image`` value."""

    __slots__ = ("key", "timings", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value
        self.timings = [0.0, 0.0]  # seconds decoding and resizing its images

    def tensor(self, spec: Spec, limits: Limits) -> np.ndarray:
        """The model's input batch; raw units are scaled, images decoded and preprocessed."""
        key, value = self.key, self.value
        if key in ("instance", "image"):
            items = [value]
        elif (
            isinstance(spec, FeatureSpec) and value and all(type(v) in (int, float) for v in value)
        ):
            items = [value]  # a flat list of numbers is one feature vector
        else:
            items = value
        limits.check(len(items), prod(spec.tensor_shape))
        if isinstance(spec, FeatureSpec):
            return _feature_rows(items, spec, key)
        tensors: list[np.ndarray | None] = []
        blobs, at = [], []  # images are decoded together, under the request's image limits
        for i, item in enumerate(items):
            where = f"{key}[{i}]" if key in ("instances", "images") else key
            if _is_image_ref(item):
                text = item if isinstance(item, str) else item["b64"]
                if not isinstance(text, str):
                    raise ValidationFailed(f"{where}.b64 must be a base64 string")
                blobs.append((where, text))
                at.append(len(tensors))
                tensors.append(None)
            elif isinstance(item, list):
                check_numbers(item, where)
                tensors.append(_preprocess(pixels_to_tensor, item, spec, where))
            else:
                raise ValidationFailed(
                    f'{where} must be a base64 image, a {{"b64": ...}} object or a pixel array '
                    f"of shape [{spec.height}, {spec.width}]"
                )
        decoded = _images(blobs, spec, limits, base64=True, timings=self.timings)
        for index, rows in zip(at, decoded, strict=True):
            tensors[index] = rows
        return np.concatenate(tensors)


def _feature_rows(items: list, spec: FeatureSpec, key: str) -> np.ndarray:
    """Feature vectors: lists of numbers in the model's order (numpy at C speed), or rows
    of raw values, objects by feature name or lists in order (``service.contract.tabular``:
    categories, booleans, missing values, as training encoded them)."""
    width = spec.n_features
    if (
        spec.plain
        and all(type(item) is list and len(item) == width for item in items)
        and all(set(map(type, item)) <= _NUMBER_TYPES for item in items)
    ):
        return _preprocess(features_to_tensor, items, spec, key)
    for i, item in enumerate(items):
        if type(item) is list and any(type(v) in (list, dict) for v in item):
            raise ValidationFailed(
                f"{key}[{i}] must be an object of features by name or a flat list of "
                f"{len(spec.raw_columns)} values"
            )
    return NamedRows(items, key).tensor(spec, None)


def by_feature(spec: Spec, input_name: str, names: set[str]) -> bool:
    """Whether inputs called ``names`` are a table model's features rather than its tensor
    (``input_name``): they name features, and not the tensor alone (a table may have a
    feature called like the tensor)."""
    if not isinstance(spec, FeatureSpec):
        return False
    features = {c.name for c in spec.raw_columns}
    if not names & features:
        return False
    return not (input_name in names and (spec.plain or not names <= features))


class NamedRows:
    """Rows of a table's raw values: objects keyed by feature name (an absent feature is
    missing) or lists of the values in the model's order; numbers, text, booleans, null.

    ``rows`` may be a function that makes them, with their ``count``: a codec that holds
    its features as columns (V2, TF Serving's columnar format) builds rows only once the
    count is known to fit the model's limits."""

    __slots__ = ("count", "rows", "where")

    def __init__(self, rows: Sequence[Any] | Callable[[], Sequence[Any]], where: str, count=None):
        self.rows, self.where = rows, where
        self.count = len(rows) if count is None else count  # type: ignore[arg-type]

    def tensor(self, spec: Spec, limits: Limits | None) -> np.ndarray:
        """The model's batch, each row encoded as training encoded the table."""
        if not isinstance(spec, FeatureSpec):
            raise ValidationFailed("this model takes images, not features by name")
        if limits is not None:
            limits.check(self.count, prod(spec.tensor_shape))
        rows = self.rows() if callable(self.rows) else self.rows
        try:
            return spec.rows_to_tensor(rows, self.where)
        except PreprocessingError as exc:
            raise ValidationFailed(str(exc)) from None


class EncodedImages:
    """Image files, each with a description for error messages (``file 'a.png'``); with
    ``base64``, each is base64 text (V2 JSON's BYTES), decoded only once the count fits."""

    __slots__ = ("base64", "blobs", "timings")

    def __init__(self, blobs: Sequence[tuple[str, bytes | str]], base64: bool = False) -> None:
        self.blobs, self.base64 = blobs, base64
        self.timings = [0.0, 0.0]  # seconds decoding and resizing

    def tensor(self, spec: Spec, limits: Limits) -> np.ndarray:
        """Decoded, grayscale, resized, scaled: the model's input batch."""
        if not isinstance(spec, ImageSpec):
            raise ValidationFailed("this model takes feature vectors, not images; send JSON")
        limits.check(len(self.blobs), prod(spec.tensor_shape))
        return np.concatenate(_images(self.blobs, spec, limits, self.base64, self.timings))


class ModelTensor:
    """A float32 batch in the model's shape: images in the model's units (nothing scaled),
    feature vectors in their own units (standardised here when the model was trained so,
    as every protocol's features are)."""

    __slots__ = ("array", "where")

    def __init__(self, array: np.ndarray, where: str) -> None:
        self.array, self.where = array, where

    def tensor(self, spec: Spec, limits: Limits) -> np.ndarray:
        """The batch itself, once its shape and values are known to fit the model."""
        array = self.array
        expected = spec.tensor_shape
        if array.ndim != len(expected) + 1 or array.shape[1:] != expected:
            raise ValidationFailed(
                f"{self.where} has shape {list(array.shape)}; the model takes {[-1, *expected]}"
            )
        limits.check(array.shape[0], prod(expected))
        if not np.isfinite(array).all():
            raise ValidationFailed(f"{self.where} must be finite numbers (no NaN or Infinity)")
        if isinstance(spec, FeatureSpec):
            if not spec.plain:
                raise ValidationFailed(
                    f"{self.where}: this model's features include categories or missing "
                    "values; send them by name ("
                    + ", ".join(c.name for c in spec.raw_columns[:8])
                    + (", ..." if len(spec.raw_columns) > 8 else "")
                    + ")"
                )
            array = spec.standardise(array)
        return np.ascontiguousarray(array, dtype=np.float32)


Inputs = JsonInstances | EncodedImages | ModelTensor | NamedRows


def _pixels(image, spec: ImageSpec, max_pixels: int, where: str, timings=None) -> np.ndarray:
    try:
        pixels = model_pixels(image, spec, max_pixels, where, timings)
    except PreprocessingError as exc:
        raise ValidationFailed(f"{where}: {exc}") from None
    return scale_pixels(pixels, spec)


def _preprocess(function, values, spec, where: str = "instances") -> np.ndarray:
    try:
        return function(values, spec)
    except PreprocessingError as exc:
        raise ValidationFailed(f"{where}: {exc}") from None
