"""Keras networks that end in a linear layer: they output logits, never probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

INPUT_NAME = "input"
OUTPUT_LAYER = "logits"


def n_outputs(n_classes: int) -> int:
    """One logit for a binary task, one per class otherwise."""
    return 1 if n_classes == 2 else n_classes


def loss_for(n_classes: int) -> keras.losses.Loss:
    """The from-logits cross-entropy matching the output width."""
    if n_classes == 2:
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy_metric(n_classes: int) -> keras.metrics.Metric:
    """Accuracy that reads logits (threshold 0 for one binary logit)."""
    if n_classes == 2:
        return keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def build_mlp(
    input_dim: int,
    n_classes: int,
    hidden: Sequence[int] = (4, 4),
    activation: str = "relu",
    dropout: float = 0.0,
) -> keras.Model:
    """A Dense stack (e.g. the lessons' 4-4 or 25-15) with a linear logits layer."""
    inputs = keras.Input(shape=(input_dim,), name=INPUT_NAME)
    x = inputs
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation=activation, name=f"dense_{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = layers.Dense(n_outputs(n_classes), activation=None, name=OUTPUT_LAYER)(x)
    name = "mlp_" + "-".join(str(u) for u in hidden) if hidden else "linear"
    return keras.Model(inputs, outputs, name=name)


def build_cnn(
    input_shape: Sequence[int],
    n_classes: int,
    filters: Sequence[int] = (32, 64),
    convs_per_block: int = 2,
    dense: int = 128,
    dropout: float = 0.3,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """A small VGG-style CNN: [conv-BN-ReLU x n, max-pool] per block, dense, linear logits.

    ``bn_momentum`` is lower for small datasets: with a few dozen steps, the default 0.99
    leaves BatchNormalization's inference statistics near their initial values.
    """
    inputs = keras.Input(shape=tuple(input_shape), name=INPUT_NAME)
    x = inputs
    for b, width in enumerate(filters, start=1):
        for c in range(1, convs_per_block + 1):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{b}_{c}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{b}_{c}")(x)
            x = layers.ReLU(name=f"relu{b}_{c}")(x)
        x = layers.MaxPooling2D(name=f"pool{b}")(x)
        x = layers.Dropout(dropout * b / len(filters), name=f"drop{b}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="drop_dense")(x)
    outputs = layers.Dense(n_outputs(n_classes), activation=None, name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name="cnn_" + "-".join(str(f) for f in filters))


def mirror_averaged(model: keras.Model) -> keras.Model:
    """``model`` run on an NHWC image and on its left-right mirror image, logits averaged
    (test-time augmentation inside the network: the ONNX file does it, twice the work)."""
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), name=INPUT_NAME)
    mirrored = layers.Lambda(lambda t: keras.ops.flip(t, axis=2), name="mirror")(inputs)
    outputs = layers.Average(name=OUTPUT_LAYER)([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_mirror_average")


def describe(model: keras.Model) -> list[str]:
    """One line per layer: name, class and output shape (for metadata.json)."""
    return [
        f"{layer.name}: {type(layer).__name__} -> {tuple(layer.output.shape)}"
        for layer in model.layers
    ]
