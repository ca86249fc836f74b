"""BentoML 1.4 serving the same ONNX files with onnxruntime and the same post-processing.

Runs in its own virtual environment, made by the harness:
``bentoml serve bench.systems.bentoml_service:Classifier --port P`` from the repository root.
"""

import sys
from pathlib import Path

import bentoml
import numpy as np
from PIL.Image import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # service.contract.postprocessing needs numpy only

from bench.systems.common import CIRCLES_CLASSES, FASHION_CLASSES, answer  # noqa: E402


@bentoml.service(workers=2, traffic={"timeout": 30})
class Classifier:
    """Three APIs, one per benchmark workload."""

    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1

        def session(name):
            path = ROOT / "models" / name / "1" / "model.onnx"
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self.fashion_session = session("fashion-mnist")
        self.circles_session = session("circles")

    @bentoml.api
    def fashion_json(self, instances: list) -> dict:
        x = np.asarray(instances, np.float32).reshape(-1, 28, 28, 1) / 255.0
        return answer(self.fashion_session.run(None, {"input": x})[0], FASHION_CLASSES)

    @bentoml.api
    def fashion_png(self, image: Image) -> dict:
        x = np.asarray(image.convert("L").resize((28, 28)), np.float32).reshape(1, 28, 28, 1)
        return answer(self.fashion_session.run(None, {"input": x / 255.0})[0], FASHION_CLASSES)

    @bentoml.api
    def circles(self, instances: list) -> dict:
        x = np.asarray(instances, np.float32)
        return answer(self.circles_session.run(None, {"input": x})[0], CIRCLES_CLASSES)
