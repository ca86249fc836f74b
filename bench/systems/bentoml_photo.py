"""BentoML 1.4 serving the photo model with the naive handler (bench/systems/photo_app.py):
``bentoml serve bench.systems.bentoml_photo:Photos --port P`` from the repository root,
``BENCH_PHOTO_MODEL`` the model.onnx."""

import os
import sys
from pathlib import Path

import bentoml
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps
from PIL.Image import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # service.contract.postprocessing needs numpy only

from service.contract.postprocessing import probabilities  # noqa: E402


@bentoml.service(workers=2, traffic={"timeout": 60})
class Photos:
    """One API: a photo in, the class out."""

    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.environ["BENCH_PHOTO_MODEL"], options, providers=["CPUExecutionProvider"]
        )
        self.name = self.session.get_inputs()[0].name

    @bentoml.api
    def photo(self, image: Image) -> dict:
        image = ImageOps.exif_transpose(image).convert("RGB")
        x = np.asarray(image.resize((224, 224), PILImage.BILINEAR), np.float32)[None]
        p = probabilities(self.session.run(None, {self.name: x})[0])[0]
        return {"label": int(p.argmax()), "confidence": float(p.max())}
