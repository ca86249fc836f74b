"""The naive baseline the lessons lead to: Flask calling Keras ``model.predict``.

The same architectures as the committed models, freshly initialized (the cost is the same).
Run as ``gunicorn -w 2 -k gthread --threads 4 bench.systems.keras_app:app``.
"""

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

from bench.systems.common import CIRCLES_CLASSES, FASHION_CLASSES, answer
from training.architectures import build_cnn, build_mlp
from training.config import default_config

_fashion_cfg, _circles_cfg = default_config("fashion-mnist"), default_config("circles")
fashion = build_cnn(
    (28, 28, 1),
    10,
    _fashion_cfg.filters,
    _fashion_cfg.convs_per_block,
    _fashion_cfg.dense,
    _fashion_cfg.dropout,
)
circles = build_mlp(2, 2, _circles_cfg.hidden)
app = Flask(__name__)


@app.post("/fashion/json")
def fashion_json():
    x = np.asarray(request.get_json()["instances"], np.float32).reshape(-1, 28, 28, 1) / 255.0
    return jsonify(answer(fashion.predict(x, verbose=0), FASHION_CLASSES))


@app.post("/fashion/png")
def fashion_png():
    image = Image.open(io.BytesIO(request.get_data())).convert("L").resize((28, 28))
    x = np.asarray(image, np.float32).reshape(1, 28, 28, 1) / 255.0
    return jsonify(answer(fashion.predict(x, verbose=0), FASHION_CLASSES))


@app.post("/circles")
def circles_json():
    x = np.asarray(request.get_json()["instances"], np.float32)
    return jsonify(answer(circles.predict(x, verbose=0), CIRCLES_CLASSES))
