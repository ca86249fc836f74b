"""The naive photo handler, as BentoML's and TorchServe's image examples write it: Pillow
decodes the whole file, turns it upright, resizes it to the model's size, onnxruntime runs.

``gunicorn -w 2 -k gthread --threads 2 bench.systems.photo_app:app`` with
``BENCH_PHOTO_MODEL`` the model.onnx (a 224x224x3 model that scales its own pixels).
"""

import io
import os

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
from PIL import Image, ImageOps

from service.contract.postprocessing import probabilities

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["BENCH_PHOTO_MODEL"], options, providers=["CPUExecutionProvider"]
)
name = session.get_inputs()[0].name
app = Flask(__name__)


def classify(data: bytes) -> dict:
    """Full decode, EXIF orientation, RGB, a bilinear resize to 224x224, the model."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    x = np.asarray(image.resize((224, 224), Image.BILINEAR), np.float32)[None]
    p = probabilities(session.run(None, {name: x})[0])[0]
    return {"label": int(p.argmax()), "confidence": float(p.max())}


@app.post("/photo")
def photo():
    return jsonify(classify(request.get_data()))
