"""``import --sample FOLDER``: raw files through the service against raw files through
Keras' own loader and ``model.predict``, on a folder of photo-like files (one a 12 MP JPEG
stored sideways with an EXIF orientation, one RGBA PNG, one grayscale PNG)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from bench.photo import jpeg, png, texture
from service.contract import metadata as contract
from training.cli import main


def _tinted(pixels: np.ndarray, red: bool) -> np.ndarray:
    out = pixels.astype(np.float32)
    out[..., 0 if red else 2] = np.clip(out[..., 0 if red else 2] + 60, 0, 255)
    out[..., 2 if red else 0] *= 0.6
    return out.astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """red/ and blue/ photos of several sizes and formats."""
    root = tmp_path_factory.mktemp("photos")
    sizes = [(180, 240), (240, 180), (300, 301), (97, 130), (480, 640), (224, 224)]
    for label in ("red", "blue"):
        (root / label).mkdir()
        for i, (h, w) in enumerate(sizes):
            pixels = _tinted(texture(h, w, seed=i + (label == "red") * 50), label == "red")
            (root / label / f"{i}.jpg").write_bytes(jpeg(pixels, orientation=(1, 6, 8, 3)[i % 4]))
            (root / label / f"{i}.png").write_bytes(png(pixels))
        rgba = np.dstack(
            [_tinted(texture(64, 80, seed=99), label == "red"), np.full((64, 80), 200)]
        )
        (root / label / "alpha.png").write_bytes(png(rgba.astype(np.uint8)))
    big = _tinted(texture(3000, 4000, seed=7), True)
    (root / "red" / "phone.jpg").write_bytes(jpeg(big, orientation=6))
    return root


def colour_model() -> keras.Model:
    """Rescaling inside, then a 1x1 convolution that scores red against blue."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    conv = keras.layers.Conv2D(2, 1, use_bias=False)
    x = conv(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(2)
    outputs = keras.layers.Softmax()(head(x))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.array([[[[4.0, -4.0], [0.0, 0.0], [-4.0, 4.0]]]], np.float32)])
    head.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def _import(tmp_path, folder, *extra) -> tuple[int, object]:
    colour_model().save(tmp_path / "colours.keras")
    repo = tmp_path / "repo"
    args = ["import", str(tmp_path / "colours.keras"), "--classes", "red,blue", "--sample"]
    code = main([*args, str(folder), "--repository", str(repo), *extra])
    return code, repo


def test_the_whole_way_agrees_with_keras_loader_and_records_the_accuracy(tmp_path, folder):
    code, repo = _import(tmp_path, folder)
    assert code == 0
    meta = contract.read(repo / "colours" / "1")
    end = meta["export"]["parity"]["end_to_end"]
    assert end["files"] == 27
    assert end["turned_upright"] == 9  # 4 + 4 JPEGs turned, and the phone photo
    assert end["class_agreement"] >= 0.99
    assert end["max_abs_prob_diff_p99"] <= 0.05
    assert meta["preprocessing"]["interpolation"] == "bilinear"
    test = meta["metrics"]["test"]
    assert test is not None
    assert test["accuracy"] >= 0.9  # red against blue: the labels are the folders
    json.dumps(meta)  # the record is plain JSON


@pytest.mark.parametrize(
    ("sabotage", "step"),
    [
        (lambda pixels: pixels[..., ::-1], "channel order:"),
        (lambda pixels: np.repeat(pixels.mean(axis=2, keepdims=True), 3, axis=2), "resize:"),
    ],
)
def test_a_service_that_read_pictures_otherwise_is_refused_and_names_the_step(
    tmp_path, folder, monkeypatch, caplog, sabotage, step
):
    """As if the service's reading of pictures were not Keras' (colours swapped, or a
    resize that loses them): nothing is published, and the step is named."""
    from service.contract import images

    real = images.keras_resize
    monkeypatch.setattr(images, "keras_resize", lambda *a, **k: sabotage(real(*a, **k)))
    code, repo = _import(tmp_path, folder)
    assert code == 1
    message = caplog.records[-1].getMessage()
    assert "agree on" in message
    assert step in message
    assert not (repo / "colours").exists() or not any((repo / "colours").iterdir())
