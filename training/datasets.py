"""The seed lessons' datasets, each with a fixed seed and a train/test split.

Features come back as float32 in their own units; images as float32 pixel arrays in the
dataset's raw units (0..255 for Fashion-MNIST, 0..16 for digits). The network's tensor is
made from them by ``service.contract.preprocessing``, the same code the service runs.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.contract.preprocessing import FeatureSpec, ImageSpec, Spec
from training.errors import Refused

log = logging.getLogger(__name__)

FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_CLASSES = (
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


class DatasetError(Refused, RuntimeError):
    """A dataset cannot be loaded; the message says how to get it."""


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays plus everything the model repository records about them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    spec: Spec
    source: str

    @property
    def task(self) -> str:
        """ "binary" for two classes, else "multiclass"."""
        return "binary" if len(self.class_names) == 2 else "multiclass"

    @property
    def is_2d(self) -> bool:
        """Two input features: a decision boundary can be drawn."""
        return isinstance(self.spec, FeatureSpec) and self.spec.n_features == 2


def _split(X: np.ndarray, y: np.ndarray, test_size: float | int, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def _features(name, X, y, classes, source, test_size, seed) -> Dataset:
    x_tr, x_te, y_tr, y_te = _split(X.astype(np.float32), y.astype(np.int64), test_size, seed)
    spec = FeatureSpec(X.shape[1], tuple(f"x{i + 1}" for i in range(X.shape[1])))
    return Dataset(name, x_tr, y_tr, x_te, y_te, tuple(classes), spec, source)


def load_circles(seed: int = 42) -> Dataset:
    """Two concentric circles, 800/200, binary: 0 = outer, 1 = inner."""
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=1000, noise=0.03, random_state=seed)
    source = f"sklearn.datasets.make_circles(n_samples=1000, noise=0.03, random_state={seed})"
    return _features("circles", X, y, ("outer", "inner"), source, 200, seed)


def load_moons(seed: int = 42) -> Dataset:
    """Two interleaving half-moons, 800/200, binary: 0 = upper, 1 = lower."""
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=1000, noise=0.1, random_state=seed)
    source = f"sklearn.datasets.make_moons(n_samples=1000, noise=0.1, random_state={seed})"
    return _features("moons", X, y, ("upper", "lower"), source, 200, seed)


BLOB_CENTERS = [[-5, 2], [-2, -2], [1, 2], [5, -2]]


def load_blobs(seed: int = 30) -> Dataset:
    """Four Gaussian blobs, 1600/400, multiclass."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=2000, centers=BLOB_CENTERS, cluster_std=1.0, random_state=seed)
    source = (
        f"sklearn.datasets.make_blobs(n_samples=2000, centers={BLOB_CENTERS}, "
        f"cluster_std=1.0, random_state={seed})"
    )
    classes = tuple(f"blob_{i}" for i in range(len(BLOB_CENTERS)))
    return _features("blobs", X, y, classes, source, 400, seed)


# Both image datasets frame one object with its longer side spanning the frame (measured:
# the median box is 8 of 8 rows for digits, 28 of 28 for Fashion-MNIST): photos are framed so.
DIGITS_SPEC = ImageSpec(
    height=8,
    width=8,
    channels=1,
    pixel_max=16.0,
    layout="flat",
    background="dark",
    invert_light_background=True,
    framing="object",
    fill=1.0,
)


def load_digits(seed: int = 42) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (values 0..16), 80/20 stratified, 10 classes."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X = bunch.images.astype(np.float32)  # (n, 8, 8), light strokes on a dark background
    x_tr, x_te, y_tr, y_te = _split(X, bunch.target.astype(np.int64), 0.2, seed)
    classes = tuple(str(d) for d in range(10))
    source = f"sklearn.datasets.load_digits(), stratified 80/20 split, random_state={seed}"
    return Dataset("digits", x_tr, y_tr, x_te, y_te, classes, DIGITS_SPEC, source)


FASHION_SPEC = ImageSpec(
    height=28,
    width=28,
    channels=1,
    pixel_max=255.0,
    layout="nhwc",
    background="dark",
    invert_light_background=True,
    framing="object",
    fill=1.0,
)


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of its declared shape."""
    opener: Callable = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise DatasetError(f"{path} holds {array.size} values, its header declares {dims}")
    return array.reshape(dims)


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory given, else $FASHION_MNIST_DIR, else Debian's install location."""
    if data_dir:
        return Path(data_dir)
    return Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_DIR)


def _keras_fashion_mnist():
    import keras

    return keras.datasets.fashion_mnist.load_data()


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    downloader: Callable | None = None,
) -> Dataset:
    """Fashion-MNIST's 60,000/10,000 28x28 images from IDX files, else Keras' downloader."""
    directory = fashion_mnist_dir(data_dir)
    paths = {key: directory / name for key, name in FASHION_MNIST_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        arrays = {key: read_idx(p) for key, p in paths.items()}
        source = f"IDX files in {directory}"
    else:
        missing = ", ".join(p.name for p in paths.values() if not p.is_file())
        log.warning("Fashion-MNIST not found in %s (missing %s); trying Keras", directory, missing)
        try:
            (x_tr, y_tr), (x_te, y_te) = (downloader or _keras_fashion_mnist)()
        except Exception as exc:
            raise DatasetError(
                f"Fashion-MNIST is not in {directory} (missing {missing}) and Keras' "
                f"downloader failed ({type(exc).__name__}: {exc}). Install it with "
                "'apt-get install dataset-fashion-mnist' (Debian), or put the four IDX .gz "
                f"files in a directory and pass --data-dir or set {FASHION_MNIST_ENV}."
            ) from exc
        arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
        source = "keras.datasets.fashion_mnist.load_data()"
    for key in ("x_train", "x_test"):
        if arrays[key].shape[1:] != (28, 28):
            raise DatasetError(f"Fashion-MNIST {key} has shape {arrays[key].shape}")
    return Dataset(
        "fashion-mnist",
        arrays["x_train"].astype(np.float32),
        arrays["y_train"].astype(np.int64),
        arrays["x_test"].astype(np.float32),
        arrays["y_test"].astype(np.int64),
        FASHION_MNIST_CLASSES,
        FASHION_SPEC,
        source,
    )


LOADERS: dict[str, Callable[..., Dataset]] = {
    "circles": load_circles,
    "moons": load_moons,
    "blobs": load_blobs,
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
}


def load(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name; ``data_dir`` only matters for Fashion-MNIST."""
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {', '.join(LOADERS)}")
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    return LOADERS[name]()
