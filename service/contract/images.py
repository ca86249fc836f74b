"""Image bytes -> numpy arrays with Pillow: PNG, JPEG, GIF, BMP, TIFF and WebP, in any mode
and orientation.

Only those formats' plugins ever see a client's bytes (Pillow's ``formats=``): Pillow reads
some forty formats, and one of them, EPS, hands its file to Ghostscript. The pixel count is
checked from the header, before any pixel is decoded, so a decompression bomb costs nothing;
so is a JPEG's count of scans, since each scan of a progressive JPEG decodes every pixel again.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage

# Our own limit is checked first; Pillow's is a second net with the same bound.
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Pillow's names of the formats the service reads (its JPEG reader also opens MPO, the
# multi-picture JPEG that cameras write); the media types the API documents are these.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
_FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF or WebP"
# A progressive JPEG of 16 MP costs ~17 ms a scan: 1,000 repeated scans fit in 94 KB and took
# 17 s. Encoders write at most ~10 (libjpeg's progressive script: 10 for colour, 6 for gray).
MAX_JPEG_SCANS = 64
# The pixel count in Pillow's DecompressionBombError message ("Image size (N pixels) ...").
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


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
        found = _BOMB_PIXELS.search(str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLarge(
            f"{what} declares {size}; the limit is {max_pixels:,}",
            details={"max_pixels": max_pixels},
        ) from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{what} is not an image Pillow can read ({_FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
        raise InvalidImage(f"{what} could not be decoded: {exc}") from None


MAX_SIDE = 32_768  # the longest side an image may have (a 16,000,000x1 PNG costs GBs)


def _open(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """The image with only its header read, refused when it declares too many pixels."""
    if not data:
        raise InvalidImage(f"{what} is empty")
    image = Image.open(io.BytesIO(data), formats=FORMATS)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{what} is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    if width == 0 or height == 0:
        raise InvalidImage(f"{what} has no pixels")
    if max(width, height) > MAX_SIDE:  # Pillow's memory grows with rows, not only pixels
        raise ImageTooLarge(
            f"{what} is {width}x{height}: a side above {MAX_SIDE:,} pixels",
            details={"width": width, "height": height, "max_side": MAX_SIDE},
        )
    if image.format in ("JPEG", "MPO"):
        # Every scan starts with an SOS marker (FF DA), which entropy-coded data never holds
        # (its FF bytes are stuffed): the count is at least the scans libjpeg would decode.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLarge(
                f"{what} is a JPEG of {scans:,} scans; the limit is {MAX_JPEG_SCANS} "
                "(each scan decodes every pixel again)",
                details={"scans": scans, "max_scans": MAX_JPEG_SCANS},
            )
    return image


def open_image(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """The image with its header alone read (no pixel decoded), within the limits."""
    with _reading(what, max_pixels):
        return _open(data, max_pixels, what)


def image_array(
    image: Image.Image, max_pixels: int, what: str = "image"
) -> tuple[np.ndarray, float]:
    """An opened image's pixels as (array, full_scale): (H, W) gray or (H, W, 3|4) color.

    ``full_scale`` is the value of white: 255 for 8-bit images, 65535 for 16-bit ones.
    EXIF orientation is applied; palette and CMYK images become RGB(A).
    """
    with _reading(what, max_pixels):
        image = ImageOps.exif_transpose(image)
        image.load()
    return _to_array(image)


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> tuple[np.ndarray, float]:
    """Decode bytes into (array, full_scale), as :func:`image_array` has them."""
    return image_array(open_image(data, max_pixels, what), max_pixels, what)


# Past this, an image is box-averaged (Pillow's reduce, in its own 8-bit memory) before it
# becomes floats: a model sees at most a few hundred pixels a side, and framing works on 384,
# so the cost of a huge or absurdly long image is bounded by these, not by its size.
MAX_WORKING_PIXELS = 2_000_000
MAX_WORKING_SIDE = 4096


def _reduced(image: Image.Image) -> Image.Image:
    """The image shrunk by one whole factor on both axes (the aspect ratio kept) until it
    has at most MAX_WORKING_PIXELS pixels and MAX_WORKING_SIDE a side."""
    width, height = image.size
    factor = max(
        math.ceil(math.sqrt(width * height / MAX_WORKING_PIXELS)),
        math.ceil(max(width, height) / MAX_WORKING_SIDE),
    )
    if factor <= 1:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce does not take (16-bit): 32-bit integers do
        return image.convert("I").reduce(factor)


def _to_array(image: Image.Image) -> tuple[np.ndarray, float]:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(_reduced(image), dtype=np.float64), 65535.0
    if mode == "F":
        array = np.asarray(_reduced(image), dtype=np.float64)
        return array, 1.0 if array.max(initial=0) <= 1.0 else 255.0
    # Colours first (a palette's indices must not be averaged), then the reduction.
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA"):
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, ...
        image = image.convert("RGB")
    return np.asarray(_reduced(image), dtype=np.float64), 255.0


def input_png(row: np.ndarray, height: int, width: int, channels: int, layout: str) -> str:
    """One instance of a model's image input as a PNG data URL: values in [0, 1] as they
    are, anything else (a standardised input) stretched from its minimum to its maximum."""
    if layout == "flat":
        row = row.reshape(height, width, channels)
    elif layout == "nchw":
        row = np.moveaxis(row, 0, -1)
    values = np.asarray(row, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    pixels = np.round(values * 255).astype(np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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
