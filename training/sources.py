"""Model files a user brings: Keras (``.keras``, ``.h5``), a SavedModel folder, ONNX.

Each loads into a :class:`Loaded`: the input and output it declares, the final activation
it ends in, the kind of output that is served after that activation is taken off
(``logits``) or could not be (``probabilities``), reference outputs to check the ONNX
file against, and how to write that file. Failures become one-line refusals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from training import export, heads

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The file is not a model this importer can take; the message says why."""


class Loaded:
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

    def describe(self) -> str:
        """One line: what happened to the final activation."""
        if self.removed:
            return f"output: logits, final {self.removed} removed"
        if self.kind == "probabilities":
            return "output: probabilities, passed through (final activation not removable)"
        return "output: logits (no final activation)"

    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """What the ONNX file must reproduce (the original's pre-activation outputs)."""
        raise NotImplementedError

    def reference_probabilities(self, x: np.ndarray) -> np.ndarray:
        """The original model's own probabilities (its activation included)."""
        raise NotImplementedError

    def write_onnx(self, path: Path) -> None:
        """The servable ONNX file."""
        raise NotImplementedError

    def architecture(self) -> dict[str, Any] | None:
        """The architecture block, where the layers are known."""
        return None


@contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    """tf2onnx logs each op it cannot convert as an error; the refusal says it once."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _probabilities_from(outputs: np.ndarray, kind: str) -> np.ndarray:
    from service.postprocessing import OutputSpec

    return OutputSpec(kind).probabilities(outputs)


class KerasSource(Loaded):
    """A ``.keras`` or ``.h5`` file (or a SavedModel TensorFlow can load)."""

    tool = "tf2onnx.convert.from_function"

    def __init__(self, model, fmt: str, declared: str | None) -> None:
        import keras

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise SourceError(
                f"the model has {len(model.inputs)} inputs and "
                f"{len(model.outputs)} outputs; one of each is needed"
            )
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
            self.kind = declared or (
                "probabilities" if heads.looks_like_probabilities(probe) else "logits"
            )
        elif declared == "probabilities":
            log.info("--output probabilities: the model's %s is removed all the same", self.removed)
        self.output_name = "logits" if self.kind == "logits" else "probabilities"
        self._keras = keras

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
        return _probabilities_from(outputs, "logits")

    def write_onnx(self, path: Path) -> None:
        """tf2onnx over a traced function; an op it cannot convert names its layer."""
        import onnx

        try:
            with _quiet_tf2onnx():
                export.export_onnx(self.model, path, output_name=self.output_name, check=False)
        except Exception as exc:  # tf2onnx's own failures
            raise SourceError(f"tf2onnx could not convert the model: {_one_line(exc)}") from None
        proto = onnx.load(str(path))
        unknown = [n for n in proto.graph.node if not _known_op(n)]
        if unknown:
            node = unknown[0]
            raise SourceError(
                f"layer {_layer_of(node.name, self.model)!r} uses the TensorFlow op "
                f"{node.op_type!r}, which tf2onnx cannot convert to ONNX"
            )
        onnx.checker.check_model(proto)

    def architecture(self) -> dict[str, Any]:
        """The layers as Keras lists them."""
        from training.architectures import describe

        return {
            "kind": "imported",
            "parameters": max(1, int(self.model.count_params())),
            "layers": describe(self.model),
        }


def _known_op(node) -> bool:
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


class OnnxSource(Loaded):
    """An ONNX file from any framework: copied, with a final Softmax/Sigmoid node cut off."""

    format = "onnx"
    tool = "copied (ONNX given)"

    def __init__(self, path: Path, declared: str | None, proto=None, fmt: str = "onnx") -> None:
        import onnx

        if declared is None and proto is None:
            raise SourceError(
                "say what the ONNX model outputs: --output logits or --output probabilities"
            )
        self.format = fmt
        if proto is None:
            try:
                proto = onnx.load(str(path))
                onnx.checker.check_model(proto)
            except Exception as exc:
                raise SourceError(f"{path} is not a valid ONNX model: {_one_line(exc)}") from None
        inits = {i.name for i in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in inits]
        if len(inputs) != 1 or len(proto.graph.output) != 1:
            raise SourceError(
                f"the model has {len(inputs)} inputs and "
                f"{len(proto.graph.output)} outputs; one of each is needed"
            )
        (inp,), (out,) = inputs, proto.graph.output
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise SourceError(f"input {inp.name!r} is not float32")
        self.input_shape = _dims(inp)
        if self.input_shape[0] not in (None,):
            raise SourceError(
                f"input {inp.name!r} has a fixed batch size "
                f"{self.input_shape[0]}; export it with a dynamic batch axis"
            )
        out_dims = _dims(out)
        if len(out_dims) != 2 or out_dims[1] is None:
            raise SourceError(
                f"output {out.name!r} has shape {list(out_dims)}; expected [batch, classes]"
            )
        self.output_width = int(out_dims[1])
        self.original = proto.SerializeToString()
        self.original_kind = declared or "probabilities"
        self.removed = heads.strip_onnx(proto)
        self.activation = self.removed.split()[0].lower() if self.removed else None
        self.kind = "logits" if self.removed else (declared or "probabilities")
        self.proto, self.input_name, self.output_name = proto, inp.name, proto.graph.output[0].name
        if self.removed:
            self.opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    def _run(self, model_bytes: bytes, x: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {self.input_name: x})[0], dtype=np.float32)

    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """The served graph's own outputs (the logits, when a final node was cut)."""
        return self._run(self.proto.SerializeToString(), x)

    def reference_probabilities(self, x: np.ndarray) -> np.ndarray:
        """The file as given, read as the user declared its output."""
        outputs = self._run(self.original, x)
        if self.removed:
            return outputs.astype(np.float64)
        return _probabilities_from(outputs, self.original_kind)

    def write_onnx(self, path: Path) -> None:
        """The (possibly trimmed) graph."""
        import onnx

        onnx.checker.check_model(self.proto)
        onnx.save(self.proto, str(path))


def _dims(value_info) -> tuple:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


def load_source(path: Path, declared: str | None) -> Loaded:
    """Recognise and load a model file or SavedModel folder."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise SourceError(f"{path} is a folder without saved_model.pb: not a SavedModel")
        return _saved_model(path, declared)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxSource(path, declared)
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise SourceError(
            f"{path.name} is not a model file: expected .keras, .h5, .onnx or a SavedModel folder"
        )
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise SourceError(f"Keras cannot load {path.name}: {_one_line(exc)}") from None
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise SourceError(
            f"{path.name} holds a model without a known input; save it with an Input layer"
        )
    return KerasSource(model, "keras" if suffix == ".keras" else "h5", declared)


def _saved_model(path: Path, declared: str | None) -> Loaded:
    """A SavedModel's serving signature through tf2onnx, then handled as ONNX."""
    import tensorflow as tf
    import tf2onnx

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except Exception as exc:
        raise SourceError(
            f"TensorFlow cannot load the SavedModel {path}: {_one_line(exc)}"
        ) from None
    specs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(specs) != 1 or len(outputs) != 1:
        raise SourceError(
            f"the SavedModel's serving signature has {len(specs)} inputs and "
            f"{len(outputs)} outputs; one of each is needed"
        )
    (key, spec), (out_key,) = next(iter(specs.items())), list(outputs)
    fixed = tf.TensorSpec(spec.shape, tf.float32, name="input")

    @tf.function(input_signature=[fixed])
    def forward(x):
        return signature(**{key: x})[out_key]

    try:
        with _quiet_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(
                forward, input_signature=[fixed], opset=export.OPSET
            )
    except Exception as exc:
        raise SourceError(f"tf2onnx could not convert the SavedModel: {_one_line(exc)}") from None
    unknown = [n for n in proto.graph.node if not _known_op(n)]
    if unknown:
        raise SourceError(f"the SavedModel's op {unknown[0].name!r} ({unknown[0].op_type}) has "
                          "no ONNX conversion in tf2onnx")  # fmt: skip
    source = OnnxSource(path, declared or "probabilities", proto=proto, fmt="savedmodel")
    if not source.removed and declared is None:
        probe = source.reference_outputs(
            np.random.default_rng(0).uniform(0, 1, (64, *source.input_shape[1:])).astype("f4")
        )
        source.kind = "probabilities" if heads.looks_like_probabilities(probe) else "logits"
        source.original_kind = source.kind
    source.tool = "tf2onnx.convert.from_function (SavedModel serving signature)"
    return source
