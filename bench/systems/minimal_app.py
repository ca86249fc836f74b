"""The cost-of-features baseline: Flask + onnxruntime, no validation, metrics or logs.

Same model files, same softmax/sigmoid, same worker count; run as
``gunicorn -w 2 -k gthread --threads 4 bench.systems.minimal_app:app``.
"""

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
from PIL import Image

from service.postprocessing import probabilities

MODELS = Path(__file__).resolve().parents[2] / "models"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def _session(name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(MODELS / name / "1" / "model.onnx"), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


app = Flask(__name__)
fashion, circles = _session("fashion-mnist"), _session("circles")


def _answer(logits, classes):
    probs = probabilities(logits)
    return jsonify(predictions=[
        {"label": classes[int(p.argmax())], "confidence": float(p.max()),
         "probabilities": dict(zip(classes, map(float, p), strict=True))}
        for p in probs
    ])  # fmt: skip


@app.post("/fashion/json")
def fashion_json():
    x = np.asarray(request.get_json()["instances"], np.float32).reshape(-1, 28, 28, 1) / 255.0
    return _answer(fashion.run(None, {"input": x})[0], FASHION_CLASSES)


@app.post("/fashion/png")
def fashion_png():
    image = Image.open(io.BytesIO(request.get_data())).convert("L").resize((28, 28))
    x = np.asarray(image, np.float32).reshape(1, 28, 28, 1) / 255.0
    return _answer(fashion.run(None, {"input": x})[0], FASHION_CLASSES)


@app.post("/circles")
def circles_json():
    x = np.asarray(request.get_json()["instances"], np.float32)
    return _answer(circles.run(None, {"input": x})[0], ["outer", "inner"])
