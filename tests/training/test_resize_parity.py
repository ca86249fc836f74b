"""The service's declared resize against TensorFlow's own: every ``tf.image.resize`` mode,
with and without antialias, Keras' ``crop_to_aspect_ratio`` and ``pad_to_aspect_ratio``,
for 28x28, 224x224 and 12 MP sources, gray and RGB, each stored sideways with an EXIF
orientation. The service's path (``open_image`` -> ``model_pixels``) gets the file; the
reference gets the same pixels decoded by TensorFlow, turned upright, resized by
TensorFlow. Within 1/255 of full scale, per pixel (PNG: a lossless file, so only the
resize can differ; JPEG decoders differ on their own: docs/own-models.md).
"""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bench.photo import png, stored, texture
from service.contract.images import model_pixels, open_image
from service.contract.preprocessing import ImageSpec
from service.contract.resize import INTERPOLATIONS, keras_resize

BOUND = 1.0  # of 255
MODES = [(m, aa) for m in INTERPOLATIONS for aa in (False, True)]


def _spec(height, width, channels, interpolation, antialias=False, aspect="stretch"):
    return ImageSpec(
        height,
        width,
        channels,
        255.0,
        "nhwc",
        "none",
        False,
        resize=aspect,
        interpolation=interpolation,
        antialias=antialias,
    )


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[np.ndarray, bytes]]:
    """name -> (upright pixels, a PNG storing them turned, with the EXIF orientation that
    turns them back)."""
    made = {}
    for name, (h, w), orientation in [
        ("28", (28, 28), 6),
        ("224", (224, 224), 8),
        ("odd", (301, 451), 3),
        ("12mp", (3000, 4000), 6),
    ]:
        pixels = texture(h, w, seed=len(made))
        for key, upright in ((name, pixels), (name + "-gray", pixels[:, :, :1])):
            data = png(upright, orientation)
            # TensorFlow decodes the file as stored (it reads no EXIF): turned.
            assert np.array_equal(tf.io.decode_png(data).numpy(), stored(upright, orientation))
            made[key] = (upright, data)
    return made


def _reference(upright: np.ndarray, channels: int) -> np.ndarray:
    """TensorFlow's decode of the same pixels (PNG: lossless), with channels as asked."""
    return upright if upright.shape[2] == channels else np.repeat(upright, channels, axis=2)


def _served(data: bytes, spec: ImageSpec) -> np.ndarray:
    pixels = model_pixels(open_image(data, 64_000_000), spec, 64_000_000)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


@pytest.mark.parametrize(("interpolation", "antialias"), MODES)
@pytest.mark.parametrize("source", ["28", "224", "odd", "12mp", "28-gray", "12mp-gray"])
def test_every_mode_reproduces_tf_image_resize(sources, source, interpolation, antialias):
    upright, data = sources[source]
    channels = upright.shape[2]
    for height, width in [(224, 224), (28, 28), (96, 160)]:
        spec = _spec(height, width, channels, interpolation, antialias)
        expected = tf.image.resize(
            _reference(upright, channels), (height, width), interpolation, antialias=antialias
        ).numpy()
        got = _served(data, spec)
        assert got.shape == expected.shape
        worst = float(np.max(np.abs(got - expected)))
        assert worst <= BOUND, (source, height, width, worst)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic", "area", "lanczos3"])
@pytest.mark.parametrize("source", ["odd", "12mp", "224"])
def test_crop_and_pad_to_aspect_ratio_as_keras_loaders(sources, source, interpolation):
    upright, data = sources[source]
    for height, width in [(224, 224), (96, 160), (160, 96)]:
        crop = keras.preprocessing.image.smart_resize(
            upright, (height, width), interpolation=interpolation
        )
        pad = tf.image.resize_with_pad(upright, height, width, method=interpolation).numpy()
        for aspect, expected in (("crop", crop), ("pad", pad)):
            got = _served(data, _spec(height, width, 3, interpolation, aspect=aspect))
            worst = float(np.max(np.abs(got - np.asarray(expected))))
            assert worst <= BOUND, (source, aspect, height, width, worst)


def test_the_default_keras_loader_is_what_an_import_declares(tmp_path, sources):
    """``image_dataset_from_directory`` itself (bilinear, no antialias), on the files."""
    upright = sources["odd"][0]
    folder = tmp_path / "only"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(upright))  # TF ignores EXIF: store it upright
    dataset = keras.utils.image_dataset_from_directory(
        tmp_path, image_size=(64, 48), batch_size=1, shuffle=False, labels=None
    )
    expected = next(iter(dataset)).numpy()[0]
    got = _served(png(upright), _spec(64, 48, 3, "bilinear"))
    assert float(np.max(np.abs(got - expected))) <= BOUND


def test_a_jpeg_decodes_as_pillow_does_and_differs_from_tensorflow_by_a_few_levels():
    """What docs/own-models.md states: TensorFlow's default JPEG decode (libjpeg's fast
    integer IDCT) and Pillow's (the accurate one) differ before any resize."""
    pixels = texture(600, 800, seed=3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    ours = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)
    accurate = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy()
    default = tf.io.decode_jpeg(data, channels=3).numpy()
    assert np.array_equal(ours, accurate)
    assert 1 <= int(np.abs(ours - default).max()) <= 6
    resized = keras_resize(ours.astype(np.uint8), 224, 224, "bilinear")
    theirs = tf.image.resize(default, (224, 224)).numpy()
    assert float(np.abs(resized - theirs).mean()) < 1.5
