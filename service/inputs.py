"""Request content -> the model's input tensor (JSON numbers, base64 images, image bytes).

Strict where numpy is lenient: ``np.asarray`` turns ``true`` and ``"1"`` into numbers, so
every leaf is checked to be a real JSON number first, with the path of the first bad one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import orjson

from service.errors import BatchTooLarge, InvalidJSON, ValidationFailed
from service.images import decode_base64, decode_image
from service.preprocessing import (
    FeatureSpec,
    ImageSpec,
    PreprocessingError,
    Spec,
    features_to_tensor,
    image_to_pixels,
    pixels_to_tensor,
)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


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
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"malformed JSON: {exc}") from None


_NUMBER_TYPES = {int, float}


def _check_numbers(value: Any, path: str) -> None:
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


def check_batch_size(n: int, maximum: int) -> None:
    """Empty and oversized batches are rejected before any work."""
    if n == 0:
        raise ValidationFailed("the batch is empty: send at least one instance")
    if n > maximum:
        raise BatchTooLarge(
            f"batch of {n} instances is above the maximum of {maximum}",
            details={"batch_size": n, "max_batch_size": maximum},
        )


def _is_image_ref(item: Any) -> bool:
    return isinstance(item, str) or (isinstance(item, dict) and set(item) == {"b64"})


def tensor_from_json(
    key: str, value: Any, spec: Spec, max_batch: int, max_pixels: int
) -> np.ndarray:
    """The tensor for a JSON body's ``instances`` / ``instance`` / ``images`` / ``image``."""
    if key in ("instance", "image"):
        items = [value]
    elif isinstance(spec, FeatureSpec) and value and all(type(v) in (int, float) for v in value):
        items = [value]  # a flat list of numbers is one feature vector
    else:
        items = value
    check_batch_size(len(items), max_batch)
    if isinstance(spec, FeatureSpec):
        for i, item in enumerate(items):
            if not isinstance(item, list) or any(type(v) is list for v in item):
                raise ValidationFailed(
                    f"{key}[{i}] must be a flat list of {spec.n_features} numbers"
                )
            _check_numbers(item, f"{key}[{i}]")
            if len(item) != spec.n_features:
                raise ValidationFailed(
                    f"{key}[{i}] has {len(item)} features; the model expects "
                    f"{spec.n_features} ({', '.join(spec.feature_names)})"
                )
        return _preprocess(features_to_tensor, items, spec)
    tensors = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]" if key in ("instances", "images") else key
        if _is_image_ref(item):
            text = item if isinstance(item, str) else item["b64"]
            if not isinstance(text, str):
                raise ValidationFailed(f"{where}.b64 must be a base64 string")
            image, full_scale = decode_image(decode_base64(text, where), max_pixels, where)
            tensors.append(_pixels(image, full_scale, spec, where))
        elif isinstance(item, list):
            _check_numbers(item, where)
            tensors.append(_preprocess(pixels_to_tensor, item, spec, where))
        else:
            raise ValidationFailed(
                f'{where} must be a base64 image, a {{"b64": ...}} object or a pixel array '
                f"of shape [{spec.height}, {spec.width}]"
            )
    return np.concatenate(tensors)


def tensor_from_images(blobs: Sequence[tuple[str, bytes]], spec: Spec, max_batch: int,
                       max_pixels: int) -> np.ndarray:  # fmt: skip
    """The tensor for uploaded image files (multipart or a raw image body)."""
    if not isinstance(spec, ImageSpec):
        raise ValidationFailed("this model takes feature vectors, not images; send JSON")
    check_batch_size(len(blobs), max_batch)
    tensors = []
    for what, data in blobs:
        image, full_scale = decode_image(data, max_pixels, what)
        tensors.append(_pixels(image, full_scale, spec, what))
    return np.concatenate(tensors)


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
