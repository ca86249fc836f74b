"""MLServer 1.7 custom runtime: the same ONNX files with onnxruntime and the same outputs as
this service's V2 route (``logits``, ``probabilities``, ``label``).

Runs in its own virtual environment, made by the harness, from the repository root:
``MLSERVER_PARALLEL_WORKERS=2 mlserver start bench/systems/mlserver`` (each model's
``model-settings.json`` names this class and the version folder it serves).
"""

from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri

from bench.systems.onnx_classifier import OnnxClassifier


class OnnxClassifierRuntime(MLModel):
    """One model version; MLServer loads it in each parallel inference worker."""

    async def load(self) -> bool:
        self.classifier = OnnxClassifier(Path(await get_model_uri(self.settings)))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0])
        outputs = [
            ResponseOutput(name=name, datatype=datatype, shape=shape, data=values.tolist())
            if datatype == "BYTES"
            else NumpyCodec.encode_output(name, values)
            for name, datatype, shape, values in self.classifier.predict(batch)
        ]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
