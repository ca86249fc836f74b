"""A user's model file or folder -> a loaded source: Keras (.keras, .h5), ONNX, SavedModel.

Sits above ``training.sources`` (the Keras source and what every source shares) and
``training.onnx_sources`` (ONNX files and SavedModels converted to ONNX), so neither
imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from training.onnx_sources import OnnxSource, saved_model
from training.sources import KerasSource, Loaded, SourceError, one_line


def load_source(path: Path, declared: str | None) -> Loaded:
    """Recognise and load a model file or SavedModel folder."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise SourceError(f"{path} is a folder without saved_model.pb: not a SavedModel")
        return saved_model(path, declared)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxSource(path, declared)
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise SourceError(
            f"{path.name} is not a model file: expected .keras, .h5, .onnx or a SavedModel folder"
        )
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise SourceError(f"Keras cannot load {path.name}: {one_line(exc)}") from None
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise SourceError(
            f"{path.name} holds a model without a known input; save it with an Input layer"
        )
    return KerasSource(model, "keras" if suffix == ".keras" else "h5", declared)
