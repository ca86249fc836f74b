"""Keras' own tabular preprocessing, folded into the contract.

A model built the keras-io way — ``keras.utils.FeatureSpace`` (or the same layers by hand)
in front of a network, one named ``Input`` per feature — runs, per feature, a chain of
preprocessing layers into one concatenation: ``StringLookup``/``IntegerLookup`` then a
one-hot ``CategoryEncoding`` (the out-of-vocabulary slot first), ``Normalization``,
``Rescaling``, or nothing. Each chain is read into a ``service.contract.tabular.Column``
(with its standardisation), and only the network after the concatenation is exported: the
service encodes the raw features itself, with no TensorFlow. Whatever is not one of those
chains is refused, naming the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.contract import tabular
from service.contract.preprocessing import FeatureSpec
from service.contract.tabular import Column
from training.errors import Refused

CONCATS = ("TFDConcat", "Concatenate")
LOOKUPS = ("StringLookup", "IntegerLookup")
# Keras' preprocessing layers: a chain holding one is folded (or refused, naming it)
PREPROCESSING = {
    *LOOKUPS,
    "CategoryEncoding",
    "Normalization",
    "Rescaling",
    "Discretization",
    "Hashing",
    "HashedCrossing",
}
EPSILON = 1e-7  # keras.backend.epsilon(): Normalization's floor on the standard deviation


class FoldRefused(Refused, ValueError):
    """A model's preprocessing that cannot be folded into the contract."""


@dataclass(frozen=True)
class Folded:
    """The network after the concatenation, and what comes before it as the contract."""

    network: object  # keras.Model taking the concatenated [batch, features] vector
    columns: tuple[Column, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def spec(self) -> FeatureSpec:
        """The contract's preprocessing for the network's input."""
        names = tabular.feature_names(self.columns)
        return FeatureSpec(len(names), names, self.mean, self.std, self.columns)


def _chain(tensor) -> tuple[str, list, tuple]:
    """(the input's name, the layers from it to ``tensor``, the input's shape), walking
    back the graph."""
    layers = []
    while True:
        layer, node_index, _ = tensor._keras_history
        if type(layer).__name__ == "InputLayer":
            return layer.name, layers[::-1], tuple(tensor.shape)
        layers.append(layer)
        inbound = layer._inbound_nodes[node_index].input_tensors
        if len(inbound) != 1:
            raise FoldRefused(f"layer {layer.name!r} joins several inputs before the features")
        tensor = inbound[0]


def _column(name: str, layers: list) -> tuple[Column, list[float], list[float]]:
    kinds = [type(layer).__name__ for layer in layers]
    if not layers:
        return Column(name, "numeric"), [0.0], [1.0]
    if kinds == ["Normalization"]:
        mean = np.asarray(layers[0].mean, np.float64).reshape(-1)
        variance = np.asarray(layers[0].variance, np.float64).reshape(-1)
        if mean.size != 1:
            raise FoldRefused(f"layer {layers[0].name!r} normalises {mean.size} values at once")
        return (
            Column(name, "numeric"),
            [float(mean[0])],
            [max(math.sqrt(float(variance[0])), EPSILON)],
        )
    if kinds == ["Rescaling"]:
        scale, offset = float(np.asarray(layers[0].scale)), float(np.asarray(layers[0].offset))
        if scale <= 0:
            raise FoldRefused(f"layer {layers[0].name!r} scales by {scale}: not foldable")
        return Column(name, "numeric"), [-offset / scale], [1.0 / scale]
    if len(kinds) == 2 and kinds[0] in LOOKUPS and kinds[1] == "CategoryEncoding":
        lookup, encoding = layers
        vocabulary = [str(v) for v in lookup.get_vocabulary()]
        ok = (
            lookup.num_oov_indices == 1
            and lookup.mask_token is None
            and str(lookup.output_mode) == "int"
            and encoding.output_mode in ("one_hot", "multi_hot")
            and encoding.num_tokens == len(vocabulary)
        )
        if not ok:
            raise FoldRefused(
                f"layer {lookup.name!r}: only one OOV slot, no mask token, into a one-hot "
                "CategoryEncoding of the vocabulary's size, can be folded"
            )
        known = tuple(tabular.category(v, name) for v in vocabulary[1:])
        column = Column(name, "categorical", None, False, known, "one_hot", unknown_first=True)
        width = len(vocabulary)
        return column, [0.0] * width, [1.0] * width
    raise FoldRefused(
        f"feature {name!r} goes through {' -> '.join(kinds)}; the import folds Normalization, "
        "Rescaling, or StringLookup/IntegerLookup -> CategoryEncoding (one-hot)"
    )


def fold(model) -> Folded | None:
    """The model's per-feature preprocessing as contract columns, or None where the model
    has no concatenation of preprocessed inputs."""
    import keras

    concats = [layer for layer in model.layers if type(layer).__name__ in CONCATS]
    if len(concats) != 1:
        return None
    (concat,) = concats
    node = concat._inbound_nodes[0]
    try:
        chains = [_chain(tensor) for tensor in node.input_tensors]
    except FoldRefused:
        return None
    kinds = {type(layer).__name__ for _, layers, _ in chains for layer in layers}
    if not kinds & PREPROCESSING:
        return None  # plain inputs: training.sources.one_input_per_feature
    columns, mean, std = [], [], []
    for name, layers, shape in chains:
        if shape[1:] not in ((1,), ()):
            raise FoldRefused(f"feature {name!r} is an input of shape {list(shape)}, not one value")
        column, m, s = _column(name, layers)
        columns.append(column)
        mean += m
        std += s
    if len({c.name for c in columns}) != len(columns):
        raise FoldRefused("a feature reaches the concatenation twice")
    network = keras.Model(node.output_tensors[0], model.outputs[0])
    return Folded(network, tuple(columns), tuple(mean), tuple(std))


def raw_rows(columns: tuple[Column, ...], n: int, seed: int = 0) -> list[dict]:
    """Rows of raw values over every column's range: numbers spread around zero, every
    category and one it never saw."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = [{} for _ in range(n)]
    for column in columns:
        if column.kind == "categorical":
            choices = [*column.vocabulary, "never-seen"]
            values = [choices[i % len(choices)] for i in range(n)]
        else:
            values = rng.normal(0, 3, n).round(3).tolist()
        for row, value in zip(rows, values, strict=True):
            row[column.name] = value
    return rows
