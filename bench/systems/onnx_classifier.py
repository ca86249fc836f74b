"""What the MLServer and KServe peers run inside their runtimes: one ONNX classifier whose
outputs are those of this service's V2 route (numpy and onnxruntime only, so the test suite
imports it; neither server is imported here).

Session options and post-processing are the service's: one intra-op and one inter-op
thread, sequential execution, every graph optimization, CPU; logits divided by the fitted
temperature, then the one stable softmax (or sigmoid for a single binary logit), argmax.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract.postprocessing import OutputSpec

MODELS = Path(__file__).resolve().parents[2] / "models"
# The V2 outputs the service returns by default, in its order.
OUTPUTS = ("logits", "probabilities", "label")


class OnnxClassifier:
    """A model version folder (``model.onnx`` + ``metadata.json``) behind one session."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        self.classes: list[str] = meta["classes"]
        self.input_name: str = meta["input"]["name"]
        self.output = OutputSpec.from_dict(meta["output"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def predict(self, batch: np.ndarray) -> list[tuple[str, str, list[int], np.ndarray]]:
        """(name, V2 datatype, shape, values) of ``logits``, ``probabilities`` and ``label``
        for a float32 batch shaped like the model's input."""
        (logits,) = self.session.run(None, {self.input_name: np.asarray(batch, np.float32)})
        probs = self.output.probabilities(logits).astype(np.float32)
        labels = np.array([self.classes[i] for i in self.output.indices(logits)], dtype=object)
        return [
            ("logits", "FP32", list(logits.shape), logits),
            ("probabilities", "FP32", list(probs.shape), probs),
            ("label", "BYTES", [len(labels)], labels),
        ]
