"""Never twice: find a model's final softmax/sigmoid and take it off, so the service's one
activation reproduces the model, or say that its outputs are probabilities.

Keras models lose the activation as a layer (``Softmax``, ``Activation``) or as a layer's
``activation=`` argument (``Dense(10, activation="softmax")``); graphs that are only
available as ONNX (a SavedModel, another framework's file) lose a final ``Softmax`` or
``Sigmoid`` node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Head:
    """What the model's output is after the strip: its kind, and what was removed."""

    kind: str  # "logits" or "probabilities"
    removed: str | None  # "softmax" / "sigmoid" (where), or None


def _activation_name(layer) -> str | None:
    """'softmax' or 'sigmoid' when the layer ends in one of them."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", None)
    return name if name in ACTIVATIONS else None


def strip_keras(model):
    """Return (a model producing the pre-activation outputs, what was removed, or None).

    The original is left intact (its probabilities are the parity reference): a
    ``Softmax`` layer is cut off by ending a new model at its input; a layer with a
    softmax/sigmoid ``activation`` is re-applied as a linear copy sharing its weights.
    """
    import keras

    (output,) = model.outputs
    layer = output._keras_history.operation
    removed = _activation_name(layer)
    if removed is None:
        return model, None
    if isinstance(layer, keras.layers.Softmax):
        trimmed = keras.Model(model.inputs, layer.input, name=f"{model.name}_logits")
        return trimmed, f"softmax (layer {layer.name!r})"
    config = {**layer.get_config(), "activation": "linear"}
    linear = type(layer).from_config(config)
    logits = linear(layer.input)
    linear.set_weights(layer.get_weights())
    trimmed = keras.Model(model.inputs, logits, name=f"{model.name}_logits")
    return trimmed, f"{removed} (activation of layer {layer.name!r})"


def detected_kind(outputs: np.ndarray) -> str:
    """What a model without a removable final activation outputs, judged from its outputs:
    probabilities when several columns sum to 1 in every row; a single column in [0, 1]
    proves nothing (a logit can stay there too), so it is taken as a logit unless the
    user says ``--output probabilities``."""
    several = np.asarray(outputs).shape[1] > 1
    return "probabilities" if several and looks_like_probabilities(outputs) else "logits"


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """Every value in [0, 1] and, with several columns, every row summing to 1."""
    z = np.asarray(outputs, dtype=np.float64)
    if z.size == 0 or z.min() < -1e-6 or z.max() > 1 + 1e-6:
        return False
    return z.shape[1] == 1 or bool(np.allclose(z.sum(axis=1), 1.0, atol=1e-4))


def strip_onnx(proto) -> str | None:
    """Rewire the graph's output to the input of a final Softmax/Sigmoid node, in place.

    Returns a description of the removed node, or None when the output is not made by one
    (through any Identity nodes) or something else reads the activation's result.
    """
    (output,) = proto.graph.output
    producers = {out: node for node in proto.graph.node for out in node.output}
    chain, name = [], output.name
    node = producers.get(name)
    while node is not None and node.op_type == "Identity":
        chain.append(node)
        node = producers.get(node.input[0])
    if node is None or node.op_type not in ("Softmax", "Sigmoid"):
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if node.op_type == "Softmax" and axis not in (-1, 1):
        return None
    chain.append(node)
    made = {out for n in chain for out in n.output}
    others = [n for n in proto.graph.node if all(n is not c for c in chain)]
    if any(i in made for n in others for i in n.input):
        return None
    for gone in chain:
        proto.graph.node.remove(gone)
    output.name = node.input[0]
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"
