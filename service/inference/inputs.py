"""What a request carries -> the model's input tensor, for every protocol.

A protocol codec wraps what it decoded in one of three input kinds, and the dataplane asks
it for the model's tensor under the model's request limits (checked before any decoding):

- :class:`JsonInstances`: the native API's JSON (feature vectors, pixel arrays in the
  dataset's raw units, base64 images, mixed in one batch);
- :class:`EncodedImages`: image files (uploads, V2 ``image`` BYTES, ``{"b64"}`` instances);
- :class:`ModelTensor`: numbers in the model's shape (V2's FP32 input, TF Serving's
  instances): images in the model's units, features in their own.

Strict where numpy is lenient: ``np.asarray`` turns ``true`` and ``"1"`` into numbers, so
every leaf is checked to be a real JSON number first, with the path of the first bad one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.contract.images import decode_base64, decode_image, image_pixels
from service.contract.preprocessing import (
    FeatureSpec,
    ImageSpec,
    PreprocessingError,
    Spec,
    features_to_tensor,
    image_to_pixels,
    pixels_to_tensor,
)
from service.errors import ImageTooLarge, InvalidJSON, ValidationFailed

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


def _images(blobs: Sequence[tuple[str, bytes]], spec: ImageSpec, limits: Limits) -> list:
    """Each image as the model's tensor rows, under the per-image and per-request pixel
    limits; with several images every header is read before any image is decoded."""
    if len(blobs) > 1:
        total = sum(image_pixels(data, limits.max_image_pixels, what) for what, data in blobs)
        if total > limits.max_request_pixels:
            raise ImageTooLarge(
                f"the request's {len(blobs)} images hold {total:,} pixels; the limit is "
                f"{limits.max_request_pixels:,} per request",
                details={"pixels": total, "max_request_pixels": limits.max_request_pixels},
            )
    per_image = min(limits.max_image_pixels, limits.max_request_pixels)
    return [_pixels(*decode_image(data, per_image, what), spec, what) for what, data in blobs]


class JsonInstances:
    """The native JSON body's ``instances`` / ``instance`` / ``images`` / ``image`` value."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value

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
            for i, item in enumerate(items):
                if not isinstance(item, list) or any(type(v) is list for v in item):
                    raise ValidationFailed(
                        f"{key}[{i}] must be a flat list of {spec.n_features} numbers"
                    )
                check_numbers(item, f"{key}[{i}]")
                if len(item) != spec.n_features:
                    raise ValidationFailed(
                        f"{key}[{i}] has {len(item)} features; the model expects "
                        f"{spec.n_features} ({', '.join(spec.feature_names)})"
                    )
            return _preprocess(features_to_tensor, items, spec)
        tensors: list[np.ndarray | None] = []
        blobs, at = [], []  # images are decoded together, under the request's pixel budget
        for i, item in enumerate(items):
            where = f"{key}[{i}]" if key in ("instances", "images") else key
            if _is_image_ref(item):
                text = item if isinstance(item, str) else item["b64"]
                if not isinstance(text, str):
                    raise ValidationFailed(f"{where}.b64 must be a base64 string")
                blobs.append((where, decode_base64(text, where)))
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
        for index, rows in zip(at, _images(blobs, spec, limits), strict=True):
            tensors[index] = rows
        return np.concatenate(tensors)


class EncodedImages:
    """Image files, each with a description for error messages (``file 'a.png'``)."""

    __slots__ = ("blobs",)

    def __init__(self, blobs: Sequence[tuple[str, bytes]]) -> None:
        self.blobs = blobs

    def tensor(self, spec: Spec, limits: Limits) -> np.ndarray:
        """Decoded, grayscale, resized, scaled: the model's input batch."""
        if not isinstance(spec, ImageSpec):
            raise ValidationFailed("this model takes feature vectors, not images; send JSON")
        limits.check(len(self.blobs), prod(spec.tensor_shape))
        return np.concatenate(_images(self.blobs, spec, limits))


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
            array = spec.standardise(array)
        return np.ascontiguousarray(array, dtype=np.float32)


Inputs = JsonInstances | EncodedImages | ModelTensor


def _pixels(image: np.ndarray, full_scale: float, spec: ImageSpec, where: str) -> np.ndarray:
    try:
        pixels = image_to_pixels(image, spec, full_scale)
    except PreprocessingError as exc:
        raise ValidationFailed(f"{where}: {exc}") from None
    return pixels_to_tensor(pixels, spec)


def _preprocess(function, values, spec, where: str = "instances") -> np.ndarray:
    try:
        return function(values, spec)
    except PreprocessingError as exc:
        raise ValidationFailed(f"{where}: {exc}") from None
