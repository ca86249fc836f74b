"""service.contract.preprocessing: the one path from raw input to the model tensor."""

import numpy as np
import pytest

from service.contract.pixels import background_is_light, resize_area, to_grayscale
from service.contract.preprocessing import (
    FeatureSpec,
    ImageSpec,
    PreprocessingError,
    features_to_tensor,
    image_to_pixels,
    images_to_tensor,
    pixels_to_tensor,
    spec_from_dict,
)

FASHION = ImageSpec(28, 28, 1, 255.0, "nhwc", "dark", True)
DIGITS = ImageSpec(8, 8, 1, 16.0, "flat", "dark", True)
TWO = FeatureSpec(2, ("x1", "x2"))


def test_features_single_vector_becomes_batch_of_one():
    out = features_to_tensor([0.5, -1.25], TWO)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.5, -1.25]])


def test_features_batch_kept():
    out = features_to_tensor([[1, 2], [3, 4], [5, 6]], TWO)
    assert out.shape == (3, 2)
    assert out[2, 1] == 6


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, 2.0, 3.0], "expected 2 features per instance, got 3"),
        ([[1.0], [2.0]], "expected 2 features per instance, got 1"),
        ([[[1.0, 2.0]]], "got 3 dimensions"),
        ([], "expected 2 features per instance, got 0"),
        ([[1.0, float("nan")]], "finite"),
        ([1.0, float("inf")], "finite"),
        (["a", "b"], "must be numbers"),
        ([[1.0, 2.0], [3.0]], "must be numbers"),
    ],
)
def test_features_rejected_with_reason(values, message):
    with pytest.raises(PreprocessingError, match=message):
        features_to_tensor(values, TWO)


def test_features_empty_batch_rejected():
    with pytest.raises(PreprocessingError, match="empty"):
        features_to_tensor(np.zeros((0, 2)), TWO)


def test_pixels_scaled_and_shaped_nhwc():
    image = np.full((28, 28), 255.0)
    image[0, 0] = 51.0
    out = pixels_to_tensor(image, FASHION)
    assert out.shape == (1, 28, 28, 1)
    assert out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx(0.2)
    assert out[0, 5, 5, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (64,), (3, 8, 8), (3, 64), (3, 8, 8, 1)])
def test_pixels_accept_every_layout_for_flat_model(shape):
    values = np.arange(np.prod(shape)).reshape(shape) % 17
    out = pixels_to_tensor(values, DIGITS)
    assert out.shape[1:] == (64,)
    assert out.max() <= 1.0
    np.testing.assert_allclose(out.ravel(), (values.ravel() / 16.0).astype(np.float32))


def test_pixels_wrong_shape_names_expected_shapes():
    with pytest.raises(PreprocessingError, match=r"\[28, 28\]"):
        pixels_to_tensor(np.zeros((27, 28)), FASHION)


def test_pixels_out_of_range_rejected():
    with pytest.raises(PreprocessingError, match=r"\[0, 16\]"):
        pixels_to_tensor(np.full((8, 8), 17.0), DIGITS)
    with pytest.raises(PreprocessingError, match=r"\[0, 255\]"):
        pixels_to_tensor(np.full((28, 28), -1.0), FASHION)


def test_grayscale_uses_pillow_luma_weights():
    rgb = np.zeros((1, 3, 3))
    rgb[0, 0] = [255, 0, 0]
    rgb[0, 1] = [0, 255, 0]
    rgb[0, 2] = [0, 0, 255]
    np.testing.assert_allclose(to_grayscale(rgb)[0], [76.245, 149.685, 29.07])


def test_grayscale_transparent_pixels_read_as_white_paper():
    rgba = np.zeros((2, 2, 4))
    rgba[0, 0] = [0, 0, 0, 255]  # opaque black
    gray = to_grayscale(rgba)
    assert gray[0, 0] == 0
    assert gray[1, 1] == 255


def test_resize_area_averages_blocks_exactly():
    image = np.arange(16, dtype=float).reshape(4, 4)
    out = resize_area(image, 2, 2)
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]])


def test_resize_area_integer_upscale_then_down_is_lossless():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (28, 28))
    up = np.kron(image, np.ones((4, 4)))
    np.testing.assert_allclose(resize_area(up, 28, 28), image, atol=1e-9)


def test_resize_area_non_integer_factor_preserves_mean():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (37, 53))
    out = resize_area(image, 28, 28)
    assert out.shape == (28, 28)
    assert out.mean() == pytest.approx(image.mean(), rel=1e-9)


def test_background_detection():
    dark = np.zeros((10, 10))
    dark[3:7, 3:7] = 1
    assert not background_is_light(dark)
    assert background_is_light(1 - dark)


def test_dark_shoe_on_white_paper_is_inverted_to_training_polarity():
    rng = np.random.default_rng(2)
    original = rng.uniform(0, 255, (28, 28))
    original[[0, -1], :] = 0  # dark border as in Fashion-MNIST
    original[:, [0, -1]] = 0
    photo = 255 - np.kron(original, np.ones((3, 3)))  # upscaled and inverted
    rgb = np.repeat(photo[:, :, None], 3, axis=2)
    pixels = image_to_pixels(rgb, FASHION)
    np.testing.assert_allclose(pixels, original, atol=1e-6)


def test_light_background_kept_when_model_does_not_invert():
    spec = ImageSpec(4, 4, 1, 255.0, "nhwc", "dark", False)
    white = np.full((4, 4), 255.0)
    np.testing.assert_allclose(image_to_pixels(white, spec), white)


def test_images_to_tensor_digits_units():
    image = np.zeros((32, 32), dtype=np.uint8)
    image[8:24, 8:24] = 255
    out = images_to_tensor([image], DIGITS)
    assert out.shape == (1, 64)
    grid = out.reshape(8, 8)
    assert grid[3, 3] == pytest.approx(1.0)
    assert grid[0, 0] == 0.0


def test_images_to_tensor_empty_rejected():
    with pytest.raises(PreprocessingError, match="empty"):
        images_to_tensor([], FASHION)


def test_spec_round_trip_through_metadata_block():
    assert spec_from_dict(FASHION.to_dict()) == FASHION
    assert spec_from_dict(DIGITS.to_dict()) == DIGITS
    assert spec_from_dict(TWO.to_dict()) == TWO
    assert FASHION.to_dict()["scale"] == pytest.approx(1 / 255)


def test_spec_unknown_kind():
    with pytest.raises(PreprocessingError, match="unknown preprocessing kind"):
        spec_from_dict({"kind": "audio"})


def test_standardised_features_are_applied_to_raw_values():
    spec = FeatureSpec(2, ("a", "b"), mean=(10.0, -1.0), std=(2.0, 0.5))
    np.testing.assert_allclose(features_to_tensor([[12.0, -1.5]], spec), [[1.0, -1.0]])
    assert spec_from_dict(spec.to_dict()) == spec


def test_rgb_nchw_with_scale_offset_mean_std():
    spec = ImageSpec(
        2,
        3,
        3,
        255.0,
        "nchw",
        "none",
        False,
        scale=2 / 255,
        offset=-1.0,
        mean=(0.0, 0.5, -0.5),
        std=(1.0, 0.5, 2.0),
    )
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (2, 3, 3)).astype(float)
    out = pixels_to_tensor(raw, spec)
    assert out.shape == (1, 3, 2, 3)
    expected = ((raw * 2 / 255 - 1.0) - np.array([0.0, 0.5, -0.5])) / np.array([1.0, 0.5, 2.0])
    np.testing.assert_allclose(out[0], expected.transpose(2, 0, 1), rtol=1e-6)
    assert spec_from_dict(spec.to_dict()) == spec


def test_rgb_model_keeps_colour_and_never_inverts_when_background_is_none():
    spec = ImageSpec(2, 2, 3, 255.0, "nhwc", "none", False, scale=1.0)
    image = np.zeros((4, 4, 3))
    image[..., 0] = 255.0  # a red picture
    pixels = image_to_pixels(image, spec)
    assert pixels.shape == (2, 2, 3)
    np.testing.assert_allclose(pixels[..., 0], 255.0)
    np.testing.assert_allclose(pixels[..., 1:], 0.0)


@pytest.mark.parametrize(("mode", "expected"), [("stretch", [[0.5, 0.0]]), ("crop", [[0.0, 0.0]])])
def test_resize_modes_stretch_and_crop(mode, expected):
    spec = ImageSpec(1, 2, 1, 1.0, "nhwc", "none", False, resize=mode)
    image = np.zeros((2, 8))
    image[:, :2] = 255.0  # white at the far left, outside the centre crop
    np.testing.assert_allclose(image_to_pixels(image, spec), expected)


def test_pad_keeps_aspect_ratio_and_fills_with_the_border_colour():
    spec = ImageSpec(4, 4, 1, 1.0, "nhwc", "none", False, resize="pad")
    image = np.full((2, 4), 255.0)  # a wide white strip with a black left half
    image[:, :2] = 0.0
    out = image_to_pixels(image, spec)
    # padded to 4 x 4 with the border's median (white) above and below
    np.testing.assert_allclose(out[1:3], [[0, 0, 1, 1], [0, 0, 1, 1]])
    assert spec_from_dict(spec.to_dict()).resize == "pad"


def test_light_background_model_inverts_dark_pictures():
    spec = ImageSpec(2, 2, 1, 255.0, "nhwc", "light", True)
    black = np.zeros((2, 2))
    np.testing.assert_allclose(image_to_pixels(black, spec), 255.0)


def test_resize_area_handles_extreme_aspect_ratios_in_linear_memory():
    column = np.zeros((4_000_000, 1))
    column[:2_000_000] = 1.0
    out = resize_area(column, 4, 4)
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 0.0, 0.0])


def test_photo_of_an_item_is_framed_like_the_dataset():
    """A dark item, printed small and off-centre on a large, unevenly lit, tinted sheet."""
    spec = ImageSpec(28, 28, 1, 255.0, "nhwc", "dark", True, framing="object", fill=1.0)
    item = np.zeros((28, 28))
    item[2:26, 8:20] = 200.0  # a tall light object in the dataset's framing
    printed = 255.0 - np.kron(item, np.ones((5, 5)))  # 140 x 140, dark on white
    _yy, xx = np.mgrid[0:480, 0:640]
    light = 0.75 + 0.25 * xx / 640  # lit from the right
    sheet = np.full((480, 640), 235.0)
    sheet[300:440, 60:200] = printed
    photo = np.clip(sheet * light + np.random.default_rng(0).normal(0, 3, sheet.shape), 0, 255)
    pixels = image_to_pixels(photo, spec)
    assert pixels.shape == (28, 28)
    rows, cols = np.flatnonzero(pixels.max(axis=1) > 128), np.flatnonzero(pixels.max(axis=0) > 128)
    assert rows[0] <= 1
    assert rows[-1] >= 26
    assert 7 <= cols[0] <= 9
    assert 18 <= cols[-1] <= 20
    assert pixels[:, :5].max() < 40  # background is dark, as the model was trained on


def test_framing_leaves_pictures_of_the_model_size_alone():
    spec = ImageSpec(28, 28, 1, 255.0, "nhwc", "dark", True, framing="object")
    rng = np.random.default_rng(4)
    item = rng.uniform(0, 255, (28, 28))
    item[:, :3] = 0
    np.testing.assert_allclose(image_to_pixels(item, spec), np.clip(item, 0, 255), atol=1e-9)


@pytest.mark.parametrize("framing", ["none", "object"])
def test_a_long_thin_picture_is_padded_without_a_giant_canvas(framing):
    """20000 x 2 pixels is little to decode; padding it to a square at full size would
    need 20000 x 20000 floats (issue: 8.9 GiB and a 500)."""
    import tracemalloc

    spec = ImageSpec(28, 28, 1, 255.0, "nhwc", "dark", True, resize="pad", framing=framing)
    picture = np.zeros((20000, 2))
    picture[5000:15000] = 255.0
    tracemalloc.start()
    pixels = image_to_pixels(picture, spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pixels.shape == (28, 28)
    assert peak < 50 * 1024 * 1024
