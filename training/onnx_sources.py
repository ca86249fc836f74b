"""ONNX files from any framework, and SavedModels converted to ONNX: a final Softmax or
Sigmoid node is cut off so that the service applies exactly one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training import export, heads
from training.sources import (
    Loaded,
    SourceError,
    graph_inputs,
    known_op,
    one_line,
    probabilities_from,
    quiet_tf2onnx,
)


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
                raise SourceError(f"{path} is not a valid ONNX model: {one_line(exc)}") from None
        inputs = graph_inputs(proto)
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
        if inp.name == "image":  # V2's encoded-image input has that name: rename the tensor
            _rename_input(proto, inp.name, "input")
        self.proto, self.input_name, self.output_name = proto, inp.name, proto.graph.output[0].name
        self.opset = max(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=1
        )

    def _run(self, model_bytes: bytes, x: np.ndarray) -> np.ndarray:
        try:
            return export.onnx_logits(model_bytes, x)
        except Exception as exc:  # IR version too new, an op it lacks, ...
            raise SourceError(f"onnxruntime cannot run the model: {one_line(exc)}") from None

    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """The served graph's own outputs (the logits, when a final node was cut)."""
        return self._run(self.proto.SerializeToString(), x)

    def reference_probabilities(self, x: np.ndarray) -> np.ndarray:
        """The file as given, read as the user declared its output."""
        outputs = self._run(self.original, x)
        if self.removed:
            return outputs.astype(np.float64)
        return probabilities_from(outputs, self.original_kind)

    def write_onnx(self, path: Path) -> None:
        """The (possibly trimmed) graph."""
        import onnx

        onnx.checker.check_model(self.proto)
        onnx.save(self.proto, str(path))


def _rename_input(proto, old: str, new: str) -> None:
    """Rename a graph input and every node input that reads it."""
    for graph_input in proto.graph.input:
        if graph_input.name == old:
            graph_input.name = new
    for node in proto.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _dims(value_info) -> tuple:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


def savedmodel_to_onnx(path: Path):
    """A SavedModel's serving signature as an ONNX graph with one input named 'input'.

    Captured constants are folded in, as for Keras models (``export.fold_captured_constants``).
    """
    import tensorflow as tf
    import tf2onnx

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except Exception as exc:
        raise SourceError(
            f"TensorFlow cannot load the SavedModel {path}: {one_line(exc)}"
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
        with quiet_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(
                forward, input_signature=[fixed], opset=export.OPSET
            )
    except Exception as exc:
        raise SourceError(f"tf2onnx could not convert the SavedModel: {one_line(exc)}") from None
    export.fold_captured_constants(proto, forward.get_concrete_function())
    unknown = [n for n in proto.graph.node if not known_op(n)]
    if unknown:
        raise SourceError(
            f"the SavedModel's op {unknown[0].name!r} ({unknown[0].op_type}) has "
            "no ONNX conversion in tf2onnx"
        )
    return proto


def saved_model(path: Path, declared: str | None) -> Loaded:
    """A SavedModel's serving signature through tf2onnx, then handled as ONNX."""
    proto = savedmodel_to_onnx(path)
    source = OnnxSource(path, declared or "probabilities", proto=proto, fmt="savedmodel")
    if not source.removed and declared is None:
        probe = source.reference_outputs(
            np.random.default_rng(0).uniform(0, 1, (64, *source.input_shape[1:])).astype("f4")
        )
        source.kind = heads.detected_kind(probe)
        source.original_kind = source.kind
    source.tool = "tf2onnx.convert.from_function (SavedModel serving signature)"
    return source
