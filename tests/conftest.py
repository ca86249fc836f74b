"""Fixtures shared by the service and end-to-end tests."""

from __future__ import annotations

import numpy as np
import pytest

import service  # noqa: F401  (before any test imports onnxruntime: its telemetry stays off)
from tests.helpers import MODELS


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST test images (Debian package) and the latest committed version's own
    logits."""
    from service.contract import metadata as contract
    from service.contract.postprocessing import OutputSpec
    from service.contract.preprocessing import pixels_to_tensor, spec_from_dict
    from service.models.predictor import OnnxPredictor
    from training.datasets import load

    ds = load("fashion-mnist")
    vdir = next(p for p in contract.latest_version_dirs(MODELS) if p.parent.name == "fashion-mnist")
    meta = contract.read(vdir)
    predictor = OnnxPredictor(vdir, meta, ["CPUExecutionProvider"])
    predictor.load()
    x = ds.x_test[:64]
    logits = predictor.predict(pixels_to_tensor(x, spec_from_dict(meta["preprocessing"])))
    probs = OutputSpec.from_dict(meta["output"]).probabilities(logits)  # with its temperature
    return {
        "images": x.astype(np.uint8),
        "labels": ds.y_test[:64],
        "logits": logits,
        "probabilities": probs,
        "classes": meta["classes"],
    }
