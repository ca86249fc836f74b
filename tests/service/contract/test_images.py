"""service.contract.images: decoding any mode/orientation, and refusing bombs before decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from service.contract.images import decode_base64, decode_image
from service.errors import ImageTooLarge, InvalidImage
from tests.helpers import image_bytes, png_header_only


def test_grayscale_png_round_trip():
    array = np.arange(256, dtype=np.uint8).reshape(16, 16)
    decoded, full = decode_image(image_bytes(array), 10_000)
    assert full == 255.0
    np.testing.assert_array_equal(decoded, array)


def test_sixteen_bit_png_keeps_its_scale():
    array = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    decoded, full = decode_image(image_bytes(array), 10_000)
    assert full == 65535.0
    np.testing.assert_array_equal(decoded, array)


def test_palette_with_transparency_becomes_rgba():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    decoded, _ = decode_image(buffer.getvalue(), 10_000)
    assert decoded.shape == (4, 4, 4)
    assert decoded[0, 0, 3] == 0  # transparent


def test_exif_orientation_is_applied():
    array = np.zeros((10, 20, 3), np.uint8)
    array[:, :10] = 255  # left half white
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=100)
    decoded, _ = decode_image(buffer.getvalue(), 10_000)
    assert decoded.shape[:2] == (20, 10)  # displayed upright: taller than wide
    assert decoded[:5].mean() > 200  # the white half is now on top
    assert decoded[-5:].mean() < 50


def test_pixel_limit_is_checked_from_the_header():
    bomb = png_header_only(5000, 5000)
    with pytest.raises(ImageTooLarge, match="5000x5000 = 25,000,000 pixels"):
        decode_image(bomb, 16_000_000)


def test_giant_header_beyond_pillows_own_limit():
    with pytest.raises(ImageTooLarge):
        decode_image(png_header_only(60_000, 60_000), 16_000_000)


def test_header_within_limit_but_no_pixel_data_is_invalid():
    with pytest.raises(InvalidImage, match="could not be decoded"):
        decode_image(png_header_only(100, 100), 16_000_000)


def test_not_an_image():
    with pytest.raises(InvalidImage, match="not an image"):
        decode_image(b"%PDF-1.4 not an image", 1000)


def test_base64_strict_and_data_urls():
    assert decode_base64("aGk=", "x") == b"hi"
    assert decode_base64("data:image/png;base64,aGk=", "x") == b"hi"
    with pytest.raises(InvalidImage, match="x is not valid base64"):
        decode_base64("a*b", "x")
