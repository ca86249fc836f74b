"""Image bytes -> numpy arrays with Pillow: PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF and
HEIC/HEIF (``pillow-heif``, the iPhone's default), in any mode and orientation.

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
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from service.contract.pixels import border
from service.contract.preprocessing import ImageSpec, image_to_pixels
from service.contract.resize import keras_resize
from service.errors import ImageTooLarge, InvalidImage

# Our own limit is checked first; Pillow's is a second net with the same bound.
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Pillow's names of the formats the service reads (its JPEG reader also opens MPO, the
# multi-picture JPEG that cameras write); the media types the API documents are these.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "AVIF", "HEIF")
_FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or HEIC"
# HEIC/HEIF through libheif (pillow-heif's plugin; its own AVIF reader stays off: Pillow's
# is used). libheif applies the file's rotation itself and clears the EXIF orientation.
pillow_heif.register_heif_opener()
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


# --- as Keras' loaders read pictures (a declared interpolation) -------------------------------

# EXIF orientation (tag 0x0112) -> the numpy view that turns the stored pixels upright, as
# ImageOps.exif_transpose does (a view: a 12 MP photo is never copied to be turned).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
# A JPEG is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled
# IDCT) only where the declared resize low-pass filters over at least this many of the
# drafted pixels a side per output pixel (the draft's own smoothing then vanishes under the
# kernel's), and only at a scale that divides both sides (a partial last block would shift
# the picture's geometry). Measured on photo-like JPEGs against the full decode, per pixel
# of 0..255, for every averaging mode at 1/2, 1/4 and 1/8 (tests/service/contract/
# test_resize.py): the smooth antialiased kernels at 5 drafted pixels, at most 0.98 (at 4,
# 1.15); area's box at 8, at most 0.89 (at 7, 2.16).
DRAFT_MARGIN = {"smooth": 5, "area": 8}
DRAFT_SCALES = (8, 4, 2)


def upright(array: np.ndarray, how: int) -> np.ndarray:
    """Pixels stored with EXIF orientation ``how``, turned upright (a view)."""
    return _UPRIGHT[how](array) if how in _UPRIGHT else array


def orientation(image: Image.Image) -> int:
    """The picture's EXIF orientation, 1 (as stored) when it has none or an invalid one."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block: Pillow's parser raises various errors
        return 1
    return value if value in _UPRIGHT else 1


def draft_margin(spec: ImageSpec) -> int | None:
    """Drafted pixels a side per output pixel the declared resize needs for a JPEG draft,
    or None where it samples rather than averages (no draft)."""
    if spec.interpolation == "area":
        return DRAFT_MARGIN["area"]
    if spec.antialias and spec.interpolation != "nearest":
        return DRAFT_MARGIN["smooth"]
    return None


def draft_scale(size: tuple[int, int], target: tuple[int, int], margin: int) -> int:
    """The largest DCT scale (8, 4, 2; else 1) that divides both sides of ``size`` and
    keeps ``margin`` pixels a side per pixel of ``target`` (both (width, height))."""
    for scale in DRAFT_SCALES:
        if all(
            s % scale == 0 and s // scale >= margin * t for s, t in zip(size, target, strict=True)
        ):
            return scale
    return 1


def _draft(image: Image.Image, spec: ImageSpec, turned: bool) -> None:
    """Ask libjpeg for the smallest DCT scale the declared resize allows (and for luma
    alone, when the model is grayscale)."""
    if image.format not in ("JPEG", "MPO") or image.mode not in ("L", "RGB", "YCbCr"):
        return
    mode = "L" if spec.channels == 1 else "RGB"
    target = (spec.height, spec.width) if turned else (spec.width, spec.height)
    margin = draft_margin(spec)
    scale = 1 if margin is None else draft_scale(image.size, target, margin)
    if scale > 1 or mode == "L":  # luma straight from the decoder, even at full size
        width, height = image.size
        image.draft(mode, (width // scale, height // scale))


def keras_array(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """An opened picture's pixels as ``tf.image.decode_image(channels=...)`` has them:
    uint8 (H, W) or (H, W, 3), upright (EXIF), alpha dropped, 16 bits cut to 8."""
    turn = orientation(image)
    _draft(image, spec, turn in (5, 6, 7, 8))
    image.load()
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        array = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        if spec.channels == 3:
            array = np.repeat(array[:, :, None], 3, axis=2)
    elif mode == "F":
        array = np.asarray(image, dtype=np.float32)
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        array = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
        if spec.channels == 3:
            array = np.repeat(array[:, :, None], 3, axis=2)
    else:
        target = "L" if spec.channels == 1 else "RGB"
        if mode != target:
            if mode == "P" and target == "L":
                image = image.convert("RGB")
            image = image.convert(target)
        array = np.asarray(image)
    return upright(array, turn)


def model_pixels(
    image: Image.Image,
    spec: ImageSpec,
    max_pixels: int,
    what: str = "image",
    timings: list[float] | None = None,
) -> np.ndarray:
    """An opened picture -> (H, W) or (H, W, C) pixels in the model's raw units: by its
    declared resize (``service.contract.resize``) or, without one, the service's own.
    ``timings``, where given, accumulates [decoding s, resizing s]."""
    started = time.perf_counter()
    if spec.interpolation is None:
        array, full_scale = image_array(image, max_pixels, what)
        decoded = time.perf_counter()
        pixels = image_to_pixels(array, spec, full_scale)
    else:
        with _reading(what, max_pixels):
            array = keras_array(image, spec)
        decoded = time.perf_counter()
        pixels = _declared(array, spec)
    if timings is not None:
        timings[0] += decoded - started
        timings[1] += time.perf_counter() - decoded
    return pixels


def _declared(array: np.ndarray, spec: ImageSpec) -> np.ndarray:
    pixels = keras_resize(
        array, spec.height, spec.width, spec.interpolation, spec.antialias, spec.resize
    )
    if spec.pixel_max != 255.0:
        pixels *= np.float32(spec.pixel_max / 255.0)
    if spec.invert_light_background and spec.background != "none":
        gray = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
        light = float(np.median(border(gray)))
        if (light > spec.pixel_max / 2) == (spec.background == "dark"):
            pixels = np.float32(spec.pixel_max) - pixels
    return pixels


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
