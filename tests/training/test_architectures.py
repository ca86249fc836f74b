"""training.architectures: every network ends in a linear layer and is trained from logits."""

import keras
import numpy as np
import pytest

from training import architectures
from training.config import default_config
from training.datasets import load
from training.trainer import build_model


def _last(model):
    return model.layers[-1]


@pytest.mark.parametrize(("n_classes", "width"), [(2, 1), (4, 4), (10, 10)])
def test_mlp_output_is_linear_logits(n_classes, width):
    model = architectures.build_mlp(2, n_classes, hidden=(25, 15))
    last = _last(model)
    assert isinstance(last, keras.layers.Dense)
    assert last.activation is keras.activations.linear
    assert last.name == "logits"
    assert model.output_shape == (None, width)
    assert [layer.units for layer in model.layers[1:]] == [25, 15, width]
    assert model.layers[0].name == "input"


def test_mlp_can_output_values_outside_probability_range():
    keras.utils.set_random_seed(7)  # a 4-unit ReLU layer can start all dead with another draw
    model = architectures.build_mlp(2, 4, hidden=(4, 4))
    out = model.predict(np.array([[50.0, -50.0], [-80.0, 90.0]]), verbose=0)
    assert (out < 0).any() or (out > 1).any()  # no softmax squeezes them into [0, 1]
    assert not np.allclose(out.sum(axis=1), 1.0)


def test_cnn_output_is_linear_and_input_named():
    model = architectures.build_cnn((28, 28, 1), 10, filters=(8, 16), dense=32)
    assert _last(model).activation is keras.activations.linear
    assert model.output_shape == (None, 10)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.layers[0].name == "input"
    assert not any(
        getattr(layer, "activation", None) is keras.activations.softmax for layer in model.layers
    )


def test_losses_expect_logits():
    binary, multi = architectures.loss_for(2), architectures.loss_for(10)
    assert isinstance(binary, keras.losses.BinaryCrossentropy)
    assert isinstance(multi, keras.losses.SparseCategoricalCrossentropy)
    assert binary.get_config()["from_logits"] is True
    assert multi.get_config()["from_logits"] is True


def test_binary_accuracy_thresholds_logits_at_zero():
    metric = architectures.accuracy_metric(2)
    metric.update_state(np.array([[1.0], [0.0], [1.0]]), np.array([[0.3], [-0.2], [-0.1]]))
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_default_configs_build_the_lessons_networks():
    circles = build_model(default_config("circles"), load("circles"))
    assert [layer.units for layer in circles.layers[1:]] == [4, 4, 1]
    blobs = build_model(default_config("blobs"), load("blobs"))
    assert [layer.units for layer in blobs.layers[1:]] == [25, 15, 4]
    digits = build_model(default_config("digits"), load("digits"))
    assert digits.input_shape == (None, 64)
    assert digits.output_shape == (None, 10)


def test_cnn_refuses_feature_vectors():
    with pytest.raises(ValueError, match="needs images"):
        build_model(default_config("circles", arch="cnn"), load("circles"))
