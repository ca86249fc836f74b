"""Model files a user brings: Keras (``.keras``, ``.h5``), a SavedModel folder, ONNX
(``training.onnx_sources``).

Each loads into a :class:`Loaded`: the input and output it declares, the final activation
it ends in, the kind of output that is served after that activation is taken off
(``logits``) or could not be (``probabilities``), reference outputs to check the ONNX
file against, and how to write that file. Failures become one-line refusals.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from training import export, heads
from training.errors import Refused

log = logging.getLogger(__name__)


class SourceError(Refused, ValueError):
    """The file is not a model this importer can take; the message says why."""


class Loaded(ABC):
    """A loaded model, its final activation handled."""

    format = ""
    tool = ""
    opset = export.OPSET
    input_name = "input"
    output_name = "logits"
    input_shape: tuple = ()
    output_width = 0
    activation: str | None = None  # the final activation found: "softmax" / "sigmoid"
    removed: str | None = None  # where it was taken off
    kind = "logits"
    feature_names: tuple[str, ...] | None = None  # a model of one named input per feature
    table = None  # training.feature_layers.Folded: Keras' preprocessing, as the contract

    def describe(self) -> str:
        """One line: what happened to the final activation."""
        if self.removed:
            return f"output: logits, final {self.removed} removed"
        if self.kind == "probabilities":
            return "output: probabilities, passed through (final activation not removable)"
        return "output: logits (no final activation)"

    @abstractmethod
    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """What the ONNX file must reproduce (the original's pre-activation outputs)."""

    @abstractmethod
    def reference_probabilities(self, x: np.ndarray) -> np.ndarray:
        """The original model's own probabilities (its activation included)."""

    @abstractmethod
    def write_onnx(self, path: Path) -> None:
        """The servable ONNX file."""

    def architecture(self) -> dict[str, Any] | None:
        """The architecture block, where the layers are known."""
        return None

    def pixel_preprocessing(self, layout: str):
        """The model's own pixel preprocessing (``training.pixel_scale``), where readable."""
        return None


@contextmanager
def quiet_tf2onnx() -> Iterator[None]:
    """tf2onnx logs each op it cannot convert as an error; the refusal says it once."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def probabilities_from(outputs: np.ndarray, kind: str) -> np.ndarray:
    """The service's probabilities for outputs of the given kind."""
    from service.contract.postprocessing import OutputSpec

    return OutputSpec(kind).probabilities(outputs)


def one_input_per_feature(model):
    """A functional model with one named numeric input per feature (keras-io's structured
    data examples), as a model of one ``[batch, features]`` input in the inputs' order:
    (the model, the feature names). Anything else with several inputs is refused."""
    import keras

    keyed = model.input if isinstance(model.input, dict) else None
    tensors = list(keyed.values()) if keyed is not None else list(model.inputs)
    names = list(keyed) if keyed is not None else [t.name for t in tensors]
    for name, tensor in zip(names, tensors, strict=True):
        shape, dtype = tuple(tensor.shape), str(tensor.dtype)
        if shape not in ((None,), (None, 1)) or not dtype.startswith(("float", "int", "uint")):
            raise SourceError(
                f"the model has {len(tensors)} inputs; input {name!r} is {dtype} of shape "
                f"{list(shape)}: several inputs must each be one number (one per feature), "
                "or give the model one input"
            )
    vector = keras.Input((len(names),), name="features")
    parts = []
    for i, tensor in enumerate(tensors):
        part = vector[:, i : i + 1] if len(tensor.shape) == 2 else vector[:, i]
        parts.append(keras.ops.cast(part, tensor.dtype))
    called = model(dict(zip(names, parts, strict=True)) if keyed is not None else parts)
    return keras.Model(vector, called), tuple(names)


def check_fold(model, folded, n: int = 256) -> None:
    """The folded contract + the network must give the whole model's outputs on raw rows
    (every category, one never seen, numbers around their range), to 1e-5."""
    import tensorflow as tf

    from training.feature_layers import FoldRefused, raw_rows

    columns = folded.columns
    rows = raw_rows(columns, n)
    keyed = model.input if isinstance(model.input, dict) else {t.name: t for t in model.inputs}
    given = {}
    for column in columns:
        dtype = str(keyed[column.name].dtype)
        values = [row[column.name] for row in rows]
        if dtype == "string":
            array = np.array([str(v) for v in values], dtype=object)
        elif dtype.startswith(("int", "uint")):
            unseen = max((int(v) for v in column.vocabulary), default=0) + 1000
            array = np.array([unseen if v == "never-seen" else int(v) for v in values], dtype)
            for row, value in zip(rows, array.tolist(), strict=True):
                row[column.name] = value
        else:
            array = np.asarray(values, dtype)
        given[column.name] = tf.constant(array.reshape(-1, *keyed[column.name].shape[1:]))
    whole = np.asarray(model(given), np.float64)
    part = np.asarray(folded.network(folded.spec.rows_to_tensor(rows, "rows")), np.float64)
    gap = float(np.max(np.abs(whole - part)))
    if gap > 1e-5:
        raise FoldRefused(
            f"the model's preprocessing, read into the contract, differs from Keras' own by "
            f"{gap:.2e} on {n} raw rows"
        )
    log.info(
        "preprocessing folded into the contract: %d features, max |diff| %.1e", len(columns), gap
    )


class KerasSource(Loaded):
    """A ``.keras`` or ``.h5`` file, loaded by Keras."""

    tool = "tf2onnx.convert.from_function"

    def __init__(self, model, fmt: str, declared: str | None) -> None:
        if len(model.outputs) != 1:
            raise SourceError(
                f"the model has {len(model.inputs)} inputs and "
                f"{len(model.outputs)} outputs; one output is needed"
            )
        if len(model.inputs) > 1:
            from training.feature_layers import fold

            folded = fold(model)
            if folded is None:
                model, self.feature_names = one_input_per_feature(model)
            else:
                check_fold(model, folded)
                model, self.table = folded.network, folded
        self.format, self.original = fmt, model
        self.input_shape = tuple(model.inputs[0].shape)
        out_shape = tuple(model.outputs[0].shape)
        if len(out_shape) != 2 or out_shape[1] is None:
            raise SourceError(
                f"the model's output has shape {list(out_shape)}; expected [batch, classes]"
            )
        self.output_width = int(out_shape[1])
        self.model, self.removed = heads.strip_keras(model)
        self.activation = self.removed.split()[0] if self.removed else None
        if self.removed is None:
            probe = self._probe()
            self.kind = declared or heads.detected_kind(probe)
        elif declared == "probabilities":
            log.info("--output probabilities: the model's %s is removed all the same", self.removed)
        self.output_name = "logits" if self.kind == "logits" else "probabilities"

    def _probe(self) -> np.ndarray:
        shape = (64, *self.input_shape[1:])
        x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
        return self.model.predict(x, verbose=0)

    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """The stripped model's outputs."""
        return np.asarray(self.model.predict(x, batch_size=256, verbose=0), dtype=np.float32)

    def reference_probabilities(self, x: np.ndarray) -> np.ndarray:
        """model.predict of the model as the user saved it."""
        outputs = np.asarray(self.original.predict(x, batch_size=256, verbose=0), np.float64)
        if self.activation or self.kind == "probabilities":
            return outputs
        return probabilities_from(outputs, "logits")

    def write_onnx(self, path: Path) -> None:
        """tf2onnx over a traced function; an op it cannot convert names its layer."""
        import onnx

        try:
            with quiet_tf2onnx():
                export.export_onnx(self.model, path, output_name=self.output_name, check=False)
        except Exception as exc:  # tf2onnx's own failures
            raise SourceError(f"tf2onnx could not convert the model: {one_line(exc)}") from None
        proto = onnx.load(str(path))
        unknown = [n for n in proto.graph.node if not known_op(n)]
        if unknown:
            node = unknown[0]
            raise SourceError(
                f"layer {_layer_of(node.name, self.model)!r} uses the TensorFlow op "
                f"{node.op_type!r}, which tf2onnx cannot convert to ONNX"
            )
        onnx.checker.check_model(proto)

    def pixel_preprocessing(self, layout: str):
        """What the layers before the first learning one do to pixels, measured."""
        from training.pixel_scale import measure

        return measure(self.model, layout)

    def architecture(self) -> dict[str, Any]:
        """The layers as Keras lists them."""
        from training.architectures import describe

        return {
            "kind": "imported",
            "parameters": max(1, int(self.model.count_params())),
            "layers": describe(self.model),
        }


def graph_inputs(proto) -> list:
    """The graph's real inputs (initializers, listed as inputs by some exporters, are not)."""
    weights = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in weights]


def known_op(node) -> bool:
    """Whether an ONNX node's operator exists at our opset (tf2onnx leaves unconvertible
    TensorFlow ops in the graph under their own names)."""
    import onnx

    try:
        onnx.defs.get_schema(node.op_type, export.OPSET, node.domain or "")
    except onnx.defs.SchemaError:
        return False
    return True


def _layer_of(op_name: str, model) -> str:
    """The Keras layer whose name scope an op's name carries (``model/dense_1/MatMul``)."""
    segments = op_name.split("/")
    for layer in sorted(model.layers, key=lambda layer: -len(layer.name)):
        pattern = re.compile(re.escape(layer.name) + r"(_\d+)?")
        if any(pattern.fullmatch(seg) for seg in segments):
            return layer.name
    return op_name
