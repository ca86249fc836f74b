"""Image augmentation in tf.data and the mirror-averaged network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import architectures, export, trainer
from training.config import TrainConfig


def test_erase_replaces_one_rectangle_of_the_configured_size_with_noise():
    import tensorflow as tf

    tf.random.set_seed(1)
    image = tf.fill((28, 28, 1), -1.0)  # noise lies in [0, 1]: erased pixels are the others
    for _ in range(50):
        out = trainer._erase(image, 1.0).numpy()[:, :, 0]
        rows, cols = np.nonzero(out >= 0)
        assert rows.size, "chance 1 always erases"
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert rows.size == height * width  # one filled rectangle
        assert 0.02 * 784 * 0.5 <= rows.size <= 0.25 * 784 * 1.5
        assert out[rows, cols].max() <= 1.0
    untouched = trainer._erase(image, 0.0).numpy()
    assert np.all(untouched == -1.0)


def test_augmented_batches_are_endless_and_one_pass_is_one_epoch():
    rng = np.random.default_rng(0)
    x = rng.random((70, 8, 8, 1), dtype=np.float32)
    y = np.arange(70) % 5
    config = TrainConfig("t", arch="cnn", batch_size=32, augment_flip=True, augment_erase=0.5)
    batches = iter(trainer.augmented(x, y, config))
    steps = math.ceil(len(x) / config.batch_size)
    for _ in range(3):  # three epochs, each exactly a permutation of the rows
        labels = np.concatenate([next(batches)[1].numpy() for _ in range(steps)])
        assert sorted(labels.tolist()) == sorted(y.tolist())


def test_mirror_averaged_network_is_mirror_symmetric_and_exports_exactly(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    inner = architectures.build_cnn((12, 10, 1), 3, filters=(4,), convs_per_block=1, dense=8)
    model = architectures.mirror_averaged(inner)
    x = np.random.default_rng(1).random((16, 12, 10, 1), dtype=np.float32)
    mirrored = x[:, :, ::-1].copy()
    logits = export.keras_logits(model, x)
    expected = (export.keras_logits(inner, x) + export.keras_logits(inner, mirrored)) / 2
    np.testing.assert_allclose(logits, expected, atol=1e-6)
    np.testing.assert_allclose(export.keras_logits(model, mirrored), logits, atol=1e-6)
    path = export.export_onnx(model, tmp_path / "model.onnx")
    np.testing.assert_allclose(export.onnx_logits(path, x), logits, atol=1e-5)
    assert model.count_params() == inner.count_params()


def test_augmentation_and_mirror_average_refuse_feature_vectors():
    from training.datasets import load

    dataset = load("circles")
    for field in ({"augment_erase": 0.5}, {"mirror_average": True}):
        config = TrainConfig("circles", epochs=1, **field)
        with pytest.raises(ValueError, match="NHWC"):
            trainer.fit(config, dataset, verbose=0)
