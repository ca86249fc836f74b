"""training.datasets: shapes, dtypes, class names, splits, and the Fashion-MNIST loader."""

import gzip
import struct

import numpy as np
import pytest

from service.contract.preprocessing import FeatureSpec, ImageSpec, background_is_light
from training import datasets
from training.datasets import DatasetError


def _check(ds, n_train, n_test, x_shape, classes):
    assert ds.x_train.shape == (n_train, *x_shape)
    assert ds.x_test.shape == (n_test, *x_shape)
    assert ds.y_train.shape == (n_train,)
    assert ds.y_test.shape == (n_test,)
    assert ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    assert ds.class_names == classes
    assert set(np.unique(ds.y_train)) == set(range(len(classes)))
    assert set(np.unique(ds.y_test)) == set(range(len(classes)))


def test_circles():
    ds = datasets.load("circles")
    _check(ds, 800, 200, (2,), ("outer", "inner"))
    assert ds.task == "binary"
    assert ds.is_2d
    assert np.bincount(ds.y_test).tolist() == [100, 100]  # stratified
    radius = np.linalg.norm(ds.x_test, axis=1)
    assert radius[ds.y_test == 0].mean() > 0.9  # outer circle
    assert radius[ds.y_test == 1].mean() < 0.9  # inner circle (factor 0.8)


def test_moons():
    ds = datasets.load("moons")
    _check(ds, 800, 200, (2,), ("upper", "lower"))
    assert ds.x_test[ds.y_test == 0, 1].mean() > ds.x_test[ds.y_test == 1, 1].mean()


def test_blobs():
    ds = datasets.load("blobs")
    _check(ds, 1600, 400, (2,), ("blob_0", "blob_1", "blob_2", "blob_3"))
    assert ds.task == "multiclass"
    for k, center in enumerate(datasets.BLOB_CENTERS):
        np.testing.assert_allclose(ds.x_train[ds.y_train == k].mean(axis=0), center, atol=0.2)


def test_digits():
    ds = datasets.load("digits")
    _check(ds, 1437, 360, (8, 8), tuple(str(d) for d in range(10)))
    assert ds.x_train.min() == 0
    assert ds.x_train.max() == 16
    assert isinstance(ds.spec, ImageSpec)
    assert (ds.spec.pixel_max, ds.spec.layout, ds.spec.background) == (16.0, "flat", "dark")


def test_splits_are_deterministic():
    a, b = datasets.load("blobs"), datasets.load("blobs")
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_feature_spec_names():
    assert datasets.load("circles").spec == FeatureSpec(2, ("x1", "x2"))


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        datasets.load("mnist")


def test_fashion_mnist_from_debian_package():
    ds = datasets.load("fashion-mnist")
    _check(ds, 60000, 10000, (28, 28), datasets.FASHION_MNIST_CLASSES)
    assert ds.class_names == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    assert ds.x_train.min() == 0
    assert ds.x_train.max() == 255
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert "IDX files in /usr/share/datasets/fashion-mnist" in ds.source
    # Light garments on a dark background: the service's inversion rule must agree.
    light = [background_is_light(x / 255.0) for x in ds.x_test]
    assert sum(light) <= 2  # measured: 2 of all 70,000 train+test images
    assert all(background_is_light(1 - x / 255.0) for x in ds.x_test[:500])


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 28, 28)),
        "y_train": np.arange(6) % 10,
        "x_test": rng.integers(0, 256, (4, 28, 28)),
        "y_test": np.arange(4),
    }
    for key, name in datasets.FASHION_MNIST_FILES.items():
        _write_idx(tmp_path / name, arrays[key])
    return tmp_path, arrays


def test_fashion_mnist_from_a_given_directory(tiny_fashion):
    directory, arrays = tiny_fashion
    ds = datasets.load("fashion-mnist", data_dir=directory)
    np.testing.assert_array_equal(ds.x_test, arrays["x_test"])
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])


def test_fashion_mnist_directory_from_environment(tiny_fashion, monkeypatch):
    directory, _ = tiny_fashion
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(directory))
    assert datasets.load("fashion-mnist").x_train.shape == (6, 28, 28)


def test_fashion_mnist_falls_back_to_downloader(tmp_path):
    x = np.zeros((3, 28, 28), np.uint8)
    y = np.array([0, 1, 2], np.uint8)
    ds = datasets.load_fashion_mnist(tmp_path, downloader=lambda: ((x, y), (x, y)))
    assert ds.source == "keras.datasets.fashion_mnist.load_data()"
    assert ds.y_test.tolist() == [0, 1, 2]


def test_fashion_mnist_clear_error_when_nothing_works(tmp_path):
    def offline():
        raise OSError("network is unreachable")

    with pytest.raises(DatasetError) as info:
        datasets.load_fashion_mnist(tmp_path, downloader=offline)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "network is unreachable" in message
    assert "--data-dir" in message
    assert datasets.FASHION_MNIST_ENV in message


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")
    with pytest.raises(DatasetError, match="not an IDX file of unsigned bytes"):
        datasets.read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as fh:
        fh.write(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"\x01\x02")
    with pytest.raises(DatasetError, match="declares"):
        datasets.read_idx(short)
