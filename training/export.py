"""Keras -> ONNX with tf2onnx, then a parity check of onnxruntime against Keras."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.architectures import INPUT_NAME
from training.errors import Refused

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4
OUTPUT_NAME = "logits"


class ExportError(Refused, RuntimeError):
    """The exported model does not reproduce the Keras model."""


@dataclass(frozen=True)
class Parity:
    """How closely onnxruntime's logits match Keras' on a dataset."""

    n_samples: int
    max_abs_diff: float
    argmax_mismatches: int
    tolerance: float

    @property
    def ok(self) -> bool:
        """Within tolerance and the same predicted class everywhere."""
        return self.max_abs_diff <= self.tolerance and self.argmax_mismatches == 0

    def to_dict(self) -> dict:
        """The ``export.parity`` block of metadata.json."""
        return asdict(self)


def export_onnx(
    model, path: Path, opset: int = OPSET, output_name: str = OUTPUT_NAME, check: bool = True
) -> Path:
    """Write ``model`` as ONNX: float32 input named 'input', dynamic batch, one named output.

    ``tf2onnx.convert.from_keras`` breaks on Keras 3 (KeyError 'keras_tensor_N'), so the
    model is traced through a ``tf.function`` with a named ``TensorSpec`` signature.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def forward(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=[spec], opset=opset)
    fold_captured_constants(proto, forward.get_concrete_function())
    rename_output(proto, output_name)
    proto.doc_string = f"Keras model {model.name}: outputs {output_name}."
    if check:
        onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    log.info("exported %s to %s (%d bytes)", model.name, path, path.stat().st_size)
    return path


def fold_captured_constants(proto, concrete) -> None:
    """Turn graph inputs that are tensors the function captured (not variables: e.g. a
    ``Normalization`` layer's mean and variance) into initializers holding their values.

    tf2onnx freezes variables, but leaves such captures as extra inputs that no client could
    feed; their values are known here.
    """
    from onnx import numpy_helper

    n_args = len(concrete.graph.inputs) - len(concrete.captured_inputs)
    values = {
        placeholder.name: captured.numpy()
        for placeholder, captured in zip(
            concrete.graph.inputs[n_args:], concrete.captured_inputs, strict=True
        )
        if captured.dtype.name != "resource"
    }
    for graph_input in list(proto.graph.input):
        if graph_input.name in values:
            proto.graph.initializer.append(
                numpy_helper.from_array(values[graph_input.name], graph_input.name)
            )
            proto.graph.input.remove(graph_input)


def rename_output(proto, new_name: str) -> None:
    """Give the graph's single output a stable name that the service can rely on."""
    (output,) = proto.graph.output
    old = output.name
    for node in proto.graph.node:
        node.output[:] = [new_name if o == old else o for o in node.output]
        node.input[:] = [new_name if i == old else i for i in node.input]
    output.name = new_name


def onnx_logits(model: Path | bytes, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Run an ONNX model (a file, or its serialized bytes) in onnxruntime (CPU) over ``x``
    in batches, feeding its one input whatever its name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    chunks = [
        session.run(None, {input_name: x[i : i + batch_size]})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)


def keras_logits(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The Keras model's logits over ``x`` (inference mode)."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> Parity:
    """Max abs difference and argmax disagreements between two logit arrays."""
    if reference.shape != candidate.shape:
        raise ExportError(f"logit shapes differ: Keras {reference.shape}, ONNX {candidate.shape}")

    def winners(z: np.ndarray) -> np.ndarray:
        return (z[:, 0] > 0).astype(int) if z.shape[1] == 1 else np.argmax(z, axis=1)

    return Parity(
        n_samples=int(reference.shape[0]),
        max_abs_diff=float(np.max(np.abs(reference - candidate))),
        argmax_mismatches=int(np.sum(winners(reference) != winners(candidate))),
        tolerance=tolerance,
    )


def check_parity(
    reference_logits: np.ndarray,
    onnx_path: Path,
    x: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[Parity, np.ndarray]:
    """Compare the ONNX file's logits on ``x`` with Keras'; raise ExportError on a mismatch.

    Returns the parity figures and onnxruntime's logits (reused for evaluation).
    """
    candidate = onnx_logits(onnx_path, x)
    parity = compare(reference_logits, candidate, tolerance)
    if not parity.ok:
        raise ExportError(
            f"ONNX model {onnx_path} does not reproduce Keras on {parity.n_samples} samples: "
            f"max |diff| = {parity.max_abs_diff:.3g} (tolerance {tolerance:g}), "
            f"{parity.argmax_mismatches} predicted classes differ"
        )
    log.info(
        "parity ok: max |diff| %.3g over %d samples, 0 argmax mismatches",
        parity.max_abs_diff,
        parity.n_samples,
    )
    return parity, candidate
