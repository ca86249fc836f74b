"""train-csv and train-images: a user's own data through the same pipeline."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from service.contract import metadata as contract
from service.contract.images import model_pixels, open_image
from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import features_to_tensor, spec_from_dict
from service.models.predictor import OnnxPredictor
from training.cli import main


def _served(version_dir, tensor):
    meta = contract.read(version_dir)
    predictor = OnnxPredictor(version_dir, meta, ["CPUExecutionProvider"])
    predictor.load()
    return OutputSpec.from_dict(meta["output"]).probabilities(predictor.predict(tensor))


def test_train_csv_standardises_inside_the_contract(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    income = rng.normal(50_000, 15_000, n)  # thousands: unusable without standardisation
    age = rng.normal(40, 12, n)
    label = np.where(income / 15_000 + age / 12 > 50_000 / 15_000 + 40 / 12, "yes", "no")
    path = tmp_path / "loans.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["income", "age", "approved"])
        writer.writerows(zip(income.round(2), age.round(2), label, strict=True))
    repo = tmp_path / "repo"
    args = [
        "train-csv",
        str(path),
        "--target",
        "approved",
        "--epochs",
        "60",
        "--quiet",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    vdir = repo / "loans" / "1"
    meta = contract.read(vdir)
    pre = meta["preprocessing"]
    assert pre["feature_names"] == ["income", "age"]
    assert pre["mean"][0] == pytest.approx(50_000, rel=0.05)
    assert pre["std"][0] == pytest.approx(15_000, rel=0.15)
    assert meta["classes"] == ["no", "yes"]
    assert meta["metrics"]["test"]["accuracy"] >= 0.9
    assert "calibration" in meta["metrics"]
    # clients send raw values: the contract's standardisation turns them into the tensor
    raw = np.array([[90_000.0, 60.0], [20_000.0, 20.0]])
    probs = _served(vdir, features_to_tensor(raw, spec_from_dict(pre)))
    assert probs[0, 1] > 0.9
    assert probs[1, 0] > 0.9


def _draw(shape: str, rng, size=20) -> np.ndarray:
    image = np.full((size, size, 3), 245, dtype=np.uint8)
    c = rng.integers(6, size - 6, 2)
    r = rng.integers(3, 5)
    yy, xx = np.mgrid[0:size, 0:size]
    if shape == "disc":
        mask = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r
    else:
        mask = (abs(yy - c[0]) <= r) & (abs(xx - c[1]) <= 1)
    image[mask] = rng.integers(0, 120, 3)
    return image


@pytest.mark.parametrize("declared", [[], ["--interpolation", "lanczos3", "--antialias"]])
def test_train_images_from_class_folders(tmp_path, declared):
    rng = np.random.default_rng(1)
    folder = tmp_path / "shapes"
    for shape in ("disc", "bar"):
        (folder / shape).mkdir(parents=True)
        for i in range(60):
            Image.fromarray(_draw(shape, rng)).save(folder / shape / f"{i}.png")
    repo = tmp_path / "repo"
    args = [
        "train-images",
        str(folder),
        "--size",
        "16",
        "--epochs",
        "25",
        "--filters",
        "8-16",
        "--dense",
        "16",
        "--batch-size",
        "16",
        "--lr",
        "0.003",
        "--quiet",
        "--repository",
        str(repo),
        *declared,
    ]
    assert main(args) == 0
    meta = contract.read(repo / "shapes" / "1")
    pre = meta["preprocessing"]
    assert (pre["height"], pre["width"], pre["channels"], pre["layout"]) == (16, 16, 3, "nhwc")
    if declared:  # the declared resize is in the contract, and training read through it
        assert (pre["interpolation"], pre["antialias"]) == ("lanczos3", True)
        from service.contract.preprocessing import spec_from_dict
        from training.userdata import read_image_folder

        spec = spec_from_dict(pre)
        read = read_image_folder(folder, spec).pixels
        one = folder / "bar" / "0.png"
        served = model_pixels(open_image(one.read_bytes(), 10**6), spec, 10**6)
        assert np.array_equal(read[sorted(folder.rglob("*.png")).index(one)], served)
    else:
        assert "interpolation" not in pre
    assert meta["classes"] == ["bar", "disc"]
    assert meta["training"]["config"]["augment_shift"] == 2
    assert meta["metrics"]["test"]["n_samples"] == 24
    assert meta["metrics"]["test"]["accuracy"] >= 0.75
    assert (repo / "shapes" / "1" / "report" / "reliability.png").is_file()


def test_train_csv_refuses_a_missing_target(tmp_path, caplog):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    assert main(["train-csv", str(path), "--target", "label", "--repository", str(tmp_path)]) == 1
    assert "has no column 'label'; its columns: a, b" in caplog.text


def test_constant_column_and_a_tiny_class(tmp_path):
    """A column that never changes must not blow up other values; a class with two rows
    cannot be stratified, and the split must still work."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 60)
    labels = ["low"] * 29 + ["high"] * 29 + ["rare"] * 2
    path = tmp_path / "odd.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "flag", "y"])
        writer.writerows((round(v, 3), 0.1, label) for v, label in zip(x, labels, strict=True))
    repo = tmp_path / "repo"
    args = [
        "train-csv",
        str(path),
        "--target",
        "y",
        "--epochs",
        "3",
        "--quiet",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    pre = contract.read(repo / "odd" / "1")["preprocessing"]
    assert pre["std"][1] == 1.0  # the constant column is centred, not divided by 1e-16
    tensor = features_to_tensor([[0.0, 0.2]], spec_from_dict(pre))
    assert abs(tensor[0, 1]) < 1.0
