"""Photo-like pictures for the image workload and its tests: camera-like texture (a 1/f
spectrum, as natural scenes have, edges, sensor noise), not flat colour, so that entropy
decoding a JPEG costs what a real photo's costs, and EXIF orientation as phones write it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def texture(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """uint8 (height, width, channels): 1/f noise in colour, a few hard edges, sensor noise."""
    rng = np.random.default_rng(seed)
    small_h, small_w = max(8, height // 8), max(8, width // 8)
    fy = np.fft.fftfreq(small_h)[:, None]
    fx = np.fft.rfftfreq(small_w)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(small_h, small_w))
    layers = []
    for _ in range(channels):
        spectrum = falloff * np.exp(2j * np.pi * rng.random(falloff.shape))
        field = np.fft.irfft2(spectrum, s=(small_h, small_w))
        layers.append((field - field.mean()) / (field.std() + 1e-9))
    coarse = np.stack(layers, axis=2)
    mix = np.array([[1.0, 0.6, 0.4], [0.6, 1.0, 0.6], [0.4, 0.6, 1.0]])[:channels, :channels]
    coarse = coarse @ mix
    image = Image.fromarray(np.clip(128 + 40 * coarse, 0, 255).astype(np.uint8).squeeze())
    big = np.asarray(image.resize((width, height), Image.BICUBIC), dtype=np.float32)
    big = big.reshape(height, width, channels)
    for _ in range(6):  # objects with hard edges
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        r = int(rng.integers(max(1, min(height, width) // 12), max(2, min(height, width) // 4)))
        top, left = max(0, cy - r), max(0, cx - r)
        yy, xx = np.ogrid[top : min(height, cy + r), left : min(width, cx + r)]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        box = big[top : top + inside.shape[0], left : left + inside.shape[1]]
        box[inside] = box[inside] * 0.5 + rng.integers(0, 255, channels) * 0.5
    big += rng.normal(0, 8, (height, width, channels)).astype(np.float32)  # sensor noise
    return np.clip(big, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray, orientation: int = 1, quality: int = 90) -> bytes:
    """The pixels as a JPEG (4:2:0, as cameras write), stored so that EXIF ``orientation``
    turns them upright: what is decoded upright equals ``pixels``' orientation."""
    image = Image.fromarray(stored(pixels, orientation).squeeze())
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, subsampling=2, exif=exif.tobytes())
    return buffer.getvalue()


def png(pixels: np.ndarray, orientation: int = 1) -> bytes:
    """As :func:`jpeg`, losslessly."""
    image = Image.fromarray(stored(pixels, orientation).squeeze())
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes(), compress_level=1)
    return buffer.getvalue()


# The stored pixels that each orientation turns upright (the inverse of exif_transpose).
_STORE = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, -1),
}


def stored(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as a file stores them for ``orientation`` to turn them upright."""
    return np.ascontiguousarray(_STORE[orientation](pixels))
