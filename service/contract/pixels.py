"""Pure numpy image operations behind the preprocessing: colour, resampling, framing.

Arrays are float64. ``to_grayscale`` and ``to_rgb`` keep the input's value range; the rest
work on images scaled to [0, 1]. Nothing here imports Flask, onnxruntime or TensorFlow.
"""

from __future__ import annotations

import numpy as np

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class ImageError(ValueError):
    """An array that is not an image these functions can use."""


def _full_scale(image: np.ndarray) -> float:
    top = max(float(image.max(initial=0.0)), 1.0)
    return 255.0 if top <= 255.0 else 65535.0


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3); alpha composited over white."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"unsupported image array shape {list(image.shape)}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        full = _full_scale(image)
        alpha = image[:, :, 3:] / full
        return image[:, :, :3] * alpha + full * (1.0 - alpha)
    return image


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W) luma, same value range.

    Alpha is composited over white: a transparent background reads as paper.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return to_rgb(image) @ _LUMA


def _resize_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Exact area averaging along one axis through a running sum: O(input + output) memory
    and time, whatever the ratio (a 16,000,000 x 1 image costs one pass, not a matrix)."""
    n_in = image.shape[axis]
    if n_in == size:
        return image
    moved = np.moveaxis(image, axis, 0)
    running = np.zeros((n_in + 1, *moved.shape[1:]))
    np.cumsum(moved, axis=0, out=running[1:])
    edges = np.linspace(0.0, n_in, size + 1)
    whole = np.minimum(np.floor(edges).astype(np.int64), n_in)
    frac = (edges - whole).reshape(-1, *([1] * (moved.ndim - 1)))
    partial = moved[np.minimum(whole, n_in - 1)]
    at_edges = running[whole] + frac * partial
    out = (at_edges[1:] - at_edges[:-1]) * (size / n_in)
    return np.moveaxis(out, 0, axis)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box-filter (area-average) resampling of (H, W) or (H, W, C) to (height, width).

    Exact area weights in both directions, so downscaling keeps thin strokes and upscaling
    by an integer factor and back down is lossless.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape[0] * height < image.shape[1] * width:  # shrink the larger axis first
        return _resize_axis(_resize_axis(image, height, 0), width, 1)
    return _resize_axis(_resize_axis(image, width, 1), height, 0)


def border(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns, as (n,) or (n, C)."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def background_is_light(gray01: np.ndarray) -> bool:
    """True when the image's border is mostly light: a dark object on paper."""
    return float(np.median(border(gray01))) > 0.5


def fit_aspect(image01: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Resize to (height, width): ``stretch`` the whole frame, ``crop`` the centre to the
    target's aspect ratio, or ``pad`` to it with the border's median colour."""
    h, w = image01.shape[:2]
    if mode == "crop":
        if h * width > w * height:
            keep = max(1, round(w * height / width))
            top = (h - keep) // 2
            image01 = image01[top : top + keep]
        else:
            keep = max(1, round(h * width / height))
            left = (w - keep) // 2
            image01 = image01[:, left : left + keep]
    elif mode == "pad":
        fill = np.median(border(image01), axis=0)
        return _fit_inside(image01, height, width, 1.0, fill)
    elif mode != "stretch":
        raise ImageError(f"unknown resize mode {mode!r}")
    return resize_area(image01, height, width)


def _fit_inside(image: np.ndarray, height: int, width: int, fill: float, ground) -> np.ndarray:
    """Scale ``image`` (aspect kept) so its longer side spans ``fill`` of (height, width),
    centred on ``ground``. The padding is done at most 8x the output size (a larger picture
    is area-reduced first), so a 20000 x 2 picture never becomes a 20000 x 20000 canvas,
    while the object's placement stays exact to an eighth of an output pixel."""
    fill = min(max(fill, 0.25), 1.0)
    image = _at_most(image, 8 * max(height, width))
    h, w = image.shape[:2]
    side = max(h * width / height, w) / fill  # the canvas width, in the picture's pixels
    target = (max(h, round(side * height / width)), max(w, round(side)))
    return resize_area(_pad_to(image, target, ground), height, width)


def _at_most(image: np.ndarray, side: int) -> np.ndarray:
    """The image area-reduced, aspect kept, so that its longer side is at most ``side``."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    ratio = side / max(h, w)
    return resize_area(image, max(1, round(h * ratio)), max(1, round(w * ratio)))


def _pad_to(image: np.ndarray, shape: tuple[int, int], fill) -> np.ndarray:
    """Centre ``image`` on a canvas of ``shape`` filled with ``fill``."""
    canvas = np.empty((*shape, *image.shape[2:]))
    canvas[...] = fill
    top, left = (shape[0] - image.shape[0]) // 2, (shape[1] - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


# --- photos of one object --------------------------------------------------------------------

WORKING_SIDE = 384  # a photo is analysed at most this large: enough for 28x28, fast
RELATIVE_EDGE = 0.1  # the object's edge: a tenth of its strongest ink, as the datasets' boxes


def _paper_surface(gray01: np.ndarray) -> np.ndarray:
    """The paper's brightness under uneven light: a quadratic surface fitted first to the
    picture's border (paper, whatever the object's size), then to every pixel that is not
    clearly darker than it (the object's pixels stay out)."""
    h, w = gray01.shape
    step = max(1, int(np.sqrt(h * w / 4096)))
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    values = gray01[::step, ::step].ravel()
    y, x = ys.ravel() / h - 0.5, xs.ravel() / w - 0.5
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    edge = max(1, min(ys.shape) // 12)
    ring = np.zeros(ys.shape, dtype=bool)
    ring[:edge], ring[-edge:], ring[:, :edge], ring[:, -edge:] = True, True, True, True
    keep = ring.ravel()
    for _ in range(6):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        residual = values - design @ coef
        kept = residual[keep]
        spread = 1.4826 * np.median(np.abs(kept - np.median(kept))) + 2e-3
        keep = residual > -3.0 * spread  # ink is only ever darker than the paper
    yy, xx = np.mgrid[0:h, 0:w]
    y, x = yy / h - 0.5, xx / w - 0.5
    surface = coef[0] + coef[1] * x + coef[2] * y + coef[3] * x * x + coef[4] * x * y
    return np.clip(surface + coef[5] * y * y, 1e-3, None)


def _paper(gray01: np.ndarray) -> tuple[np.ndarray | float, bool]:
    """(paper brightness, photographed): a digital picture's flat background as it is, a
    photo's paper under its light."""
    edge = border(gray01)
    level = float(np.quantile(edge, 0.9))
    if np.mean(np.abs(edge - level) <= 2 / 255) >= 0.3:  # no sensor noise: drawn, not shot
        return max(level, 1e-3), False
    return _paper_surface(gray01), True


def _box3(image: np.ndarray) -> np.ndarray:
    """3x3 mean (edges repeated): takes sensor noise off a mask without moving edges."""
    padded = np.pad(image, 1, mode="edge")
    h, w = image.shape
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def frame_object(gray01: np.ndarray, height: int, width: int, fill: float) -> np.ndarray:
    """A photo of one object -> (height, width) in [0, 1], light object on a dark ground.

    The paper's brightness is estimated (uneven light, tinted paper), the object is what is
    clearly darker than it (or lighter, on a dark ground), and it is cropped, padded to a
    square with background and scaled so that its longer side spans ``fill`` of the frame,
    as the datasets frame their items; on a photo, its darkest part becomes 1. A digital
    picture with a flat background keeps its values (only its framing changes).
    """
    gray01 = _at_most(gray01, WORKING_SIDE)
    if not background_is_light(gray01):
        gray01 = 1.0 - gray01
    paper, photo = _paper(gray01)
    ink = np.clip(1.0 - gray01 / paper, 0.0, 1.0)
    smooth = _box3(ink) if min(ink.shape) >= 3 else ink
    quiet = smooth[smooth < np.median(smooth) + 1e-9]
    noise = 1.4826 * float(np.median(np.abs(quiet - np.median(quiet)))) if quiet.size else 0.0
    strong = float(np.quantile(smooth, 0.995))
    mask = smooth > max(0.08, 5.0 * noise, RELATIVE_EDGE * strong)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    found = rows.size > 0  # else nothing stands out: keep the whole frame
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if found else ink
    framed = _fit_inside(crop, height, width, fill, 0.0)
    top = float(framed.max())  # a photo's ink is never black: its darkest part becomes 1
    return np.clip(framed / top, 0.0, 1.0) if photo and top > 0.05 else framed
