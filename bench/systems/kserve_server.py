"""KServe 0.21's Python model server (``kserve.ModelServer``) with a custom ``kserve.Model``:
the same ONNX files with onnxruntime and the same outputs as this service's V2 route.

Runs in its own virtual environment, made by the harness, from the repository root:
``python -m bench.systems.kserve_server --http_port P --grpc_port Q --workers 2``
(ModelServer's own flags; ``--workers`` above 1 spawns that many uvicorn processes).
"""

from pathlib import Path

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid

from bench.systems.onnx_classifier import MODELS, OnnxClassifier


class OnnxClassifierModel(Model):
    """One model version (``models/<name>/1``) under its name."""

    def __init__(self, name: str, folder: Path) -> None:
        super().__init__(name)
        self.folder = folder
        self.load()

    def load(self) -> bool:
        self.classifier = OnnxClassifier(self.folder)
        self.ready = True
        return self.ready

    # ModelServer pickles the registered models into each spawned uvicorn worker; an
    # onnxruntime session does not pickle, so every worker makes its own.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "classifier"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        outputs = [
            InferOutput(name, shape, datatype, values)
            for name, datatype, shape, values in self.classifier.predict(
                payload.inputs[0].as_numpy()
            )
        ]
        # As kserve.utils.utils.get_predict_response answers (a response id is required).
        return InferResponse(
            payload.id or generate_uuid(),
            self.name,
            outputs,
            model_version="1",
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


if __name__ == "__main__":
    ModelServer().start(
        [OnnxClassifierModel(name, MODELS / name / "1") for name in ("fashion-mnist", "circles")]
    )
