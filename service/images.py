"""Image bytes -> numpy arrays with Pillow: any format, mode and orientation Pillow reads.

The pixel count is checked from the header, before any pixel is decoded, so a
decompression bomb costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage

# Our own limit is checked first; Pillow's is a second net with the same bound.
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


@contextmanager
def _reading(what: str, max_pixels: int) -> Iterator[None]:
    """Pillow's exceptions, for any step of reading an image, as the API's errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own net (at open) caught a header beyond even its limit.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLarge(
            f"{what} declares {size}; the limit is {max_pixels:,}",
            details={"max_pixels": max_pixels},
        ) from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{what} is not an image Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
        raise InvalidImage(f"{what} could not be decoded: {exc}") from None


def _open(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """The image with only its header read, refused when it declares too many pixels."""
    if not data:
        raise InvalidImage(f"{what} is empty")
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{what} is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    if width == 0 or height == 0:
        raise InvalidImage(f"{what} has no pixels")
    return image


def image_pixels(data: bytes, max_pixels: int, what: str = "image") -> int:
    """The pixels an image declares, from its header alone (nothing is decoded)."""
    with _reading(what, max_pixels):
        width, height = _open(data, max_pixels, what).size
    return width * height


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> tuple[np.ndarray, float]:
    """Decode bytes into (array, full_scale): (H, W) gray or (H, W, 3|4) color.

    ``full_scale`` is the value of white: 255 for 8-bit images, 65535 for 16-bit ones.
    EXIF orientation is applied; palette and CMYK images become RGB(A).
    """
    with _reading(what, max_pixels):
        image = ImageOps.exif_transpose(_open(data, max_pixels, what))
        image.load()
    return _to_array(image)


def _to_array(image: Image.Image) -> tuple[np.ndarray, float]:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image, dtype=np.float64), 65535.0
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return array, 1.0 if array.max(initial=0) <= 1.0 else 255.0
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA"):
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, ...
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float64), 255.0


def decode_base64(text: str, what: str) -> bytes:
    """Base64 as clients write it: standard or URL-safe alphabet, padded or not, wrapped
    in lines or not, with or without a ``data:image/...;base64,`` prefix; nothing else."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{what} is not valid base64") from None
