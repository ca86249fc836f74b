"""service.contract.images: decoding any mode/orientation, and refusing bombs before decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from service.contract.images import FORMATS, MAX_JPEG_SCANS, decode_base64, decode_image
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


# --- the formats Pillow may open -----------------------------------------------------------

REFUSED = [
    "BLP",
    "DDS",
    "DIB",
    "EPS",
    "ICNS",
    "ICO",
    "JPEG2000",
    "MSP",
    "PCX",
    "PPM",
    "QOI",
    "SGI",
    "SPIDER",
    "TGA",
    "XBM",
]


def _saved(fmt: str, **save_args) -> bytes:
    image = Image.new("RGB", (16, 16), (10, 200, 30))
    if fmt in ("XBM", "MSP"):
        image = image.convert("1")
    elif fmt == "BLP":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", REFUSED)
def test_formats_outside_the_allow_list_are_never_handed_to_their_plugin(fmt, monkeypatch):
    data = _saved(fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow alone would read it
    Image.init()
    touched: list[str] = []
    for name in list(Image.OPEN):
        if name not in FORMATS:
            monkeypatch.setitem(
                Image.OPEN,
                name,
                (
                    lambda *a, name=name: touched.append(name),
                    lambda prefix, name=name: touched.append(name),
                ),
            )
    with pytest.raises(InvalidImage) as refused:
        decode_image(data, 10_000, "upload")
    assert str(refused.value) == (
        "upload is not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or HEIC)"
    )
    assert touched == []


def test_an_eps_upload_never_reaches_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    rendered = []

    def ghostscript(*args, **kwargs):
        rendered.append(1)
        return Image.new("RGB", (16, 16)).im

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    eps = _saved("EPS")
    Image.open(io.BytesIO(eps)).load()  # what an unrestricted Pillow does with it
    assert rendered == [1]
    with pytest.raises(InvalidImage, match="not an image Pillow can read"):
        decode_image(eps, 10_000)
    assert rendered == [1]


def test_a_pdf_is_not_an_image():
    with pytest.raises(InvalidImage, match=r"\(PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or HEIC\)"):
        decode_image(_saved("PDF"), 10_000)


@pytest.mark.parametrize(
    ("fmt", "save_args", "exact"),
    [
        ("PNG", {}, True),
        ("JPEG", {"quality": 95}, False),
        ("GIF", {}, True),
        ("BMP", {}, True),
        ("TIFF", {"compression": "tiff_deflate"}, True),
        ("WEBP", {"lossless": True}, True),
        ("WEBP", {"quality": 90}, False),
    ],
)
def test_every_allowed_format_decodes(fmt, save_args, exact):
    array = np.zeros((12, 16), np.uint8)
    array[2:10, 4:12] = 200
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **save_args)
    decoded, full = decode_image(buffer.getvalue(), 10_000)
    gray = decoded if decoded.ndim == 2 else decoded[..., :3].mean(axis=-1)
    assert (gray.shape, full) == ((12, 16), 255.0)
    if exact:
        np.testing.assert_array_equal(gray, array)
    else:
        assert np.abs(gray - array).mean() < 8


def test_a_cameras_multi_picture_jpeg_decodes_its_first_picture():
    first = Image.fromarray(np.full((8, 8, 3), 250, np.uint8))
    second = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second], quality=95)
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    decoded, _ = decode_image(buffer.getvalue(), 10_000)
    assert decoded.shape == (8, 8, 3)
    assert decoded.mean() > 240


# --- what a JPEG's scans cost ----------------------------------------------------------------


def _progressive_jpeg(scans: int) -> bytes:
    """A gray progressive JPEG (libjpeg writes 6 scans) whose last scan repeats up to
    ``scans`` scans: each one more pass over every pixel."""
    array = np.full((64, 64), 200, np.uint8)
    array[16:48, 16:48] = 30
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", progressive=True, quality=50)
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    assert data.count(b"\xff\xda") == 6
    return data[:-2] + data[last:-2] * (scans - 6) + data[-2:]


def test_a_jpeg_of_too_many_scans_is_refused_from_its_markers(monkeypatch):
    from PIL import ImageFile

    decoded, _ = decode_image(_progressive_jpeg(MAX_JPEG_SCANS), 10_000)
    assert decoded.shape == (64, 64)
    assert abs(decoded[32, 32] - 30) < 10
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1))
    with pytest.raises(ImageTooLarge) as refused:
        decode_image(_progressive_jpeg(MAX_JPEG_SCANS + 1), 10_000, "upload")
    assert str(refused.value) == (
        "upload is a JPEG of 65 scans; the limit is 64 (each scan decodes every pixel again)"
    )
    assert refused.value.details == {"scans": 65, "max_scans": 64}
    assert loads == []
