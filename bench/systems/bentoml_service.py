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
sys.path.insert(0, str(ROOT))  # service.postprocessing needs numpy only

from service.postprocessing import probabilities  # noqa: E402

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def _answer(logits, classes):
    return {"predictions": [
        {"label": classes[int(p.argmax())], "confidence": float(p.max()),
         "probabilities": dict(zip(classes, map(float, p), strict=True))}
        for p in probabilities(logits)
    ]}  # fmt: skip


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
        return _answer(self.fashion_session.run(None, {"input": x})[0], FASHION_CLASSES)

    @bentoml.api
    def fashion_png(self, image: Image) -> dict:
        x = np.asarray(image.convert("L").resize((28, 28)), np.float32).reshape(1, 28, 28, 1)
        return _answer(self.fashion_session.run(None, {"input": x / 255.0})[0], FASHION_CLASSES)

    @bentoml.api
    def circles(self, instances: list) -> dict:
        x = np.asarray(instances, np.float32)
        return _answer(self.circles_session.run(None, {"input": x})[0], ["outer", "inner"])
