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

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage

# Our own limit is checked first; Pillow's is a second net with the same bound.
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> tuple[np.ndarray, float]:
    """Decode bytes into (array, full_scale): (H, W) gray or (H, W, 3|4) color.

    ``full_scale`` is the value of white: 255 for 8-bit images, 65535 for 16-bit ones.
    EXIF orientation is applied; palette and CMYK images become RGB(A).
    """
    if not data:
        raise InvalidImage(f"{what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{what} is {width}x{height} = {width * height:,} pixels; "
                    f"the limit is {max_pixels:,}",
                    details={"width": width, "height": height, "max_pixels": max_pixels},
                )
            image = ImageOps.exif_transpose(image)
            image.load()
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
    if width == 0 or height == 0:
        raise InvalidImage(f"{what} has no pixels")
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
    """Strict base64 (a ``data:image/...;base64,`` prefix is allowed)."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{what} is not valid base64") from None
