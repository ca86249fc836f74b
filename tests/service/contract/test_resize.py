"""Pictures read as Keras' loaders read them, fast: EXIF orientation as views, the JPEG
draft (DCT-domain downscaling) only within 1/255 of the full decode, HEIC and AVIF.
(The resize kernels themselves are checked against TensorFlow in
tests/training/test_resize_parity.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench.photo import jpeg, png, texture
from service.contract import images
from service.contract.images import keras_array, model_pixels, open_image
from service.contract.metadata import MetadataError, validate
from service.contract.preprocessing import ImageSpec
from service.contract.resize import crop_box, keras_resize, pad_box, resize
from tests.helpers import MODELS


def spec(size=(224, 224), channels=3, interpolation="bilinear", antialias=False, aspect="stretch"):
    return ImageSpec(
        *size,
        channels,
        255.0,
        "nhwc",
        "none",
        False,
        resize=aspect,
        interpolation=interpolation,
        antialias=antialias,
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_as_pillow_applies_it(orientation):
    pixels = texture(30, 44, seed=orientation)
    data = png(pixels, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    got = keras_array(open_image(data, 10**6), spec())
    assert np.array_equal(got, expected)
    assert np.array_equal(got, pixels)


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {
        "landscape": jpeg(texture(1500, 2000, seed=1), orientation=1),
        "sideways": jpeg(texture(1600, 1200, seed=2), orientation=6),
        "gray": jpeg(texture(1500, 2000, seed=3)[:, :, :1], orientation=8),
    }


def _both_ways(data: bytes, wanted: ImageSpec, monkeypatch) -> tuple[np.ndarray, np.ndarray, int]:
    """(drafted, full decode, the draft's scale): the same picture with and without it;
    where drafted, it keeps the mode's margin of pixels a side per output pixel."""
    opened = open_image(data, 10**8)
    full_size = opened.size
    drafted = model_pixels(opened, wanted, 10**8)
    scale = round(full_size[0] / opened.size[0])
    if scale > 1:
        turned = images.orientation(open_image(data, 10**8)) in (5, 6, 7, 8)
        target = (wanted.height, wanted.width) if turned else (wanted.width, wanted.height)
        margin = images.draft_margin(wanted)
        assert all(s >= margin * t for s, t in zip(opened.size, target, strict=True))
        assert all(s * scale == f for s, f in zip(opened.size, full_size, strict=True))
    with monkeypatch.context() as m:
        m.setattr(images, "DRAFT_SCALES", ())
        full = model_pixels(open_image(data, 10**8), wanted, 10**8)
    return drafted, full, scale


AVERAGING = [
    ("area", False),
    ("bilinear", True),
    ("bicubic", True),
    ("mitchellcubic", True),
    ("lanczos3", True),
    ("lanczos5", True),
]


@pytest.mark.parametrize(("interpolation", "antialias"), AVERAGING)
@pytest.mark.parametrize("photo", ["landscape", "sideways", "gray"])
def test_the_jpeg_draft_gives_the_declared_resize_within_1_of_255(
    photos, photo, interpolation, antialias, monkeypatch
):
    channels = 1 if photo == "gray" else 3
    used = set()
    for size in [(96, 96), (64, 80), (28, 28), (160, 160), (56, 56)]:
        wanted = spec(size, channels, interpolation, antialias)
        drafted, full, scale = _both_ways(photos[photo], wanted, monkeypatch)
        used.add(scale)
        assert float(np.max(np.abs(drafted - full))) <= 1.0, (size, scale)
    assert used & {2, 4, 8}, "the draft was never used"


def test_the_draft_scale_divides_both_sides_and_keeps_the_margin():
    assert images.draft_scale((4000, 3000), (224, 224), 5) == 2  # 1500 = 6.7 x 224
    assert images.draft_scale((4000, 3000), (224, 224), 8) == 1
    assert images.draft_scale((4032, 3024), (28, 28), 5) == 8
    assert images.draft_scale((2000, 1500), (28, 28), 5) == 4  # 1500 / 8 is not whole
    assert images.draft_scale((2001, 1500), (28, 28), 5) == 1
    assert images.draft_margin(spec(interpolation="area")) > images.draft_margin(
        spec(antialias=True)
    )


@pytest.mark.parametrize(
    ("interpolation", "antialias"),
    [("bilinear", False), ("bicubic", False), ("nearest", False), ("nearest", True)],
)
def test_no_draft_where_the_resize_samples_rather_than_averages(
    photos, interpolation, antialias, monkeypatch
):
    wanted = spec((28, 28), 3, interpolation, antialias)
    drafted, full, scale = _both_ways(photos["landscape"], wanted, monkeypatch)
    assert scale == 1
    assert np.array_equal(drafted, full)


def test_colours_as_tensorflow_decodes_them():
    """Alpha dropped (tf.image.decode_image(channels=3)), 16 bits cut to their high byte,
    gray repeated to RGB."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (200, 10, 30), 0
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, "PNG")
    got = keras_array(open_image(buffer.getvalue(), 10**6), spec())
    assert got.shape == (8, 8, 3)
    assert got[0, 0].tolist() == [200, 10, 30]
    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(sixteen).save(buffer, "PNG")
    got = keras_array(open_image(buffer.getvalue(), 10**6), spec(channels=1))
    assert got.dtype == np.uint8
    assert np.array_equal(got, (sixteen >> 8).astype(np.uint8))
    gray = keras_array(open_image(png(texture(8, 8)[:, :, :1]), 10**6), spec(channels=3))
    assert gray.shape == (8, 8, 3)
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_crop_and_pad_boxes_truncate_as_keras_and_tensorflow_do():
    # smart_resize: int(w * th / tw), int((h - rows) / 2)
    assert crop_box(3000, 4000, 224, 224) == (0, 500, 3000, 3000)
    top, left, rows, cols = crop_box(301, 451, 96, 160)
    assert (rows, cols) == (270, 451)
    assert (top, left) == (15, 0)
    # resize_with_pad: the picture scaled into the frame, centred, floors in float32
    assert pad_box(3000, 4000, 224, 224) == (28, 0, 168, 224)
    assert pad_box(300, 451, 224, 224) == (37, 0, 149, 224)
    framed = keras_resize(np.full((300, 451, 3), 200, np.uint8), 224, 224, aspect="pad")
    assert framed[:37].max() == 0
    assert framed[186:].max() == 0
    assert np.allclose(framed[37:186], 200)


def test_a_constant_picture_stays_constant_in_every_mode():
    flat = np.full((123, 77, 3), 87, np.uint8)
    for interpolation in ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5"):
        for antialias in (False, True):
            out = resize(flat, 50, 90, interpolation, antialias)
            assert np.allclose(out, 87, atol=1e-3), (interpolation, antialias)


def test_metadata_declares_the_resize_and_refuses_unknown_ones():
    import json

    meta = json.loads((MODELS / "fashion-mnist" / "1" / "metadata.json").read_text())
    meta["preprocessing"].update(interpolation="lanczos3", antialias=True, framing="none")
    validate(meta)
    meta["preprocessing"]["interpolation"] = "gaussian"
    with pytest.raises(MetadataError, match="interpolation"):
        validate(meta)
    meta["preprocessing"].update(interpolation="bilinear", framing="object")
    with pytest.raises(MetadataError, match="no interpolation"):
        validate(meta)


def _encoded(pixels: np.ndarray, fmt: str, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored = np.ascontiguousarray(np.rot90(pixels, 1) if orientation == 6 else pixels)
    Image.fromarray(stored).save(buffer, fmt, quality=90, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_photos_are_read_upright(fmt):
    yy, xx = np.mgrid[0:64, 0:96]
    upright = np.stack([xx * 2.5, yy * 3.5, 128 + 0 * xx], 2).astype(np.uint8)
    data = _encoded(upright, fmt, orientation=6)
    opened = open_image(data, 10**6)
    assert opened.format == fmt
    for wanted in (spec((64, 96)), ImageSpec(64, 96, 3, 255.0, "nhwc", "none", False)):
        got = model_pixels(open_image(data, 10**6), wanted, 10**6)
        assert got.shape == (64, 96, 3)
        assert float(np.abs(got - upright).mean()) < 2.0  # lossy, but upright


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_heic_upload_is_answered_as_the_same_pixels_in_a_png(client, fmt):
    """Through the API: a HEIC (or AVIF) photo gets the answer its decoded pixels get."""
    yy, xx = np.mgrid[0:120, 0:90]
    picture = np.stack([xx * 2, yy * 2, 255 - xx * 2], 2).astype(np.uint8)
    data = _encoded(picture, fmt, orientation=6)
    decoded = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    served = client.post("/predict?model=fashion-mnist", data=data, content_type="image/heic")
    assert served.status_code == 200, served.get_json()
    same = client.post("/predict?model=fashion-mnist", data=png(decoded), content_type="image/png")
    assert served.get_json()["predictions"] == same.get_json()["predictions"]
