"""Photos of one object for the models trained on centred items (Fashion-MNIST, digits).

Each test item is printed dark on tinted paper, at several scales, off-centre on canvases
of other aspect ratios, lit unevenly, with sensor noise and JPEG compression; the service's
preprocessing must find and frame it so that the model's label agrees with its label for
the clean item at least 90% of the time.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.contract import metadata as contract
from service.contract.images import decode_image
from service.contract.preprocessing import image_to_pixels, pixels_to_tensor, spec_from_dict
from service.models.predictor import OnnxPredictor
from tests.helpers import MODELS
from training import datasets

CANVASES = [(480, 640), (640, 480), (300, 500), (420, 420), (720, 540)]
SCALES = {"fashion-mnist": (4, 12), "digits": (12, 40)}  # printed 96..480 px tall
N = 200


def photograph(item01: np.ndarray, rng: np.random.Generator, scale: int) -> bytes:
    """The item (1 = ink) printed, placed, lit and photographed: JPEG bytes."""
    h, w = item01.shape
    printed = Image.fromarray((item01 * 255).astype(np.uint8)).resize((w * scale, h * scale))
    ink_item = np.asarray(printed, dtype=np.float64) / 255
    height, width = CANVASES[rng.integers(len(CANVASES))]
    height, width = max(height, int(h * scale * 1.3)), max(width, int(w * scale * 1.3))
    top = rng.integers(height // 20, height - h * scale - height // 20)
    left = rng.integers(width // 20, width - w * scale - width // 20)
    ink = np.zeros((height, width))
    ink[top : top + h * scale, left : left + w * scale] = ink_item
    paper = np.array([235.0, 228.0, 212.0]) + rng.normal(0, 8, 3)  # tinted
    dark = np.array([25.0, 25.0, 35.0]) + rng.normal(0, 8, 3)
    picture = paper * (1 - ink[..., None]) + dark * ink[..., None]
    yy, xx = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, 2 * np.pi)  # light falls off across the sheet in any direction
    ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    ramp = (ramp - ramp.min()) / np.ptp(ramp)
    light = rng.uniform(0.55, 0.75) + rng.uniform(0.25, 0.45) * ramp
    picture = picture * light[..., None] + rng.normal(0, 4, picture.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=70)
    return out.getvalue()


@pytest.mark.parametrize("name", ["fashion-mnist", "digits"])
def test_photos_agree_with_the_clean_items(name):
    vdir = next(p for p in contract.latest_version_dirs(MODELS) if p.parent.name == name)
    meta = contract.read(vdir)
    spec = spec_from_dict(meta["preprocessing"])
    assert spec.framing == "object"
    predictor = OnnxPredictor(vdir, meta, ["CPUExecutionProvider"])
    predictor.load()
    items = datasets.load(name).x_test[:N].reshape(N, spec.height, spec.width)
    clean = predictor.predict(pixels_to_tensor(items, spec)).argmax(axis=1)
    rng = np.random.default_rng(0)
    photos = []
    for item in items:
        jpeg = photograph(item / spec.pixel_max, rng, int(rng.integers(*SCALES[name])))
        image, full_scale = decode_image(jpeg, 10_000_000)
        photos.append(image_to_pixels(image, spec, full_scale))
    labels = predictor.predict(pixels_to_tensor(np.stack(photos), spec)).argmax(axis=1)
    agreement = float(np.mean(labels == clean))
    assert agreement >= 0.90, f"{name}: photo labels agree with clean ones {agreement:.1%}"


def test_without_framing_the_photo_is_squashed_and_wrong_more_often():
    """The reason for the option: the whole frame resized makes the object tiny."""
    from dataclasses import replace

    vdir = next(p for p in contract.latest_version_dirs(MODELS) if p.parent.name == "fashion-mnist")
    meta = contract.read(vdir)
    spec = spec_from_dict(meta["preprocessing"])
    predictor = OnnxPredictor(vdir, meta, ["CPUExecutionProvider"])
    predictor.load()
    items = datasets.load("fashion-mnist").x_test[:60].reshape(60, 28, 28)
    clean = predictor.predict(pixels_to_tensor(items, spec)).argmax(axis=1)
    rng = np.random.default_rng(1)
    agree = {"object": 0, "none": 0}
    for i, item in enumerate(items):
        image, full = decode_image(photograph(item / 255, rng, int(rng.integers(4, 12))), 10**7)
        for framing in agree:
            pixels = image_to_pixels(image, replace(spec, framing=framing), full)
            agree[framing] += int(
                predictor.predict(pixels_to_tensor(pixels, spec)).argmax() == clean[i]
            )
    assert agree["object"] > agree["none"] + 20
