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

from bench.systems.common import CIRCLES_CLASSES, FASHION_CLASSES, answer

MODELS = Path(__file__).resolve().parents[2] / "models"


def _session(name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        str(MODELS / name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


app = Flask(__name__)
fashion, circles = _session("fashion-mnist"), _session("circles")


@app.post("/fashion/json")
def fashion_json():
    x = np.asarray(request.get_json()["instances"], np.float32).reshape(-1, 28, 28, 1) / 255.0
    return jsonify(answer(fashion.run(None, {"input": x})[0], FASHION_CLASSES))


@app.post("/fashion/png")
def fashion_png():
    image = Image.open(io.BytesIO(request.get_data())).convert("L").resize((28, 28))
    x = np.asarray(image, np.float32).reshape(1, 28, 28, 1) / 255.0
    return jsonify(answer(fashion.run(None, {"input": x})[0], FASHION_CLASSES))


@app.post("/circles")
def circles_json():
    x = np.asarray(request.get_json()["instances"], np.float32)
    return jsonify(answer(circles.run(None, {"input": x})[0], CIRCLES_CLASSES))
