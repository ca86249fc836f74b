"""``python -m training import PATH``: a user's own classifier into the model repository.

PATH is a ``.keras`` file, a legacy ``.h5``, a SavedModel folder, or an ``.onnx`` file from
any framework. The input kind comes from the model (rank 2: feature vectors; rank 4:
images, NHWC or NCHW); a final softmax/sigmoid is taken off so that the service applies
exactly one (``training.heads``); ONNX must reproduce the original on the user's data or
on generated inputs, else nothing is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import metadata as contract
from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import FeatureSpec, ImageSpec, Spec
from training import export, heads, pixel_scale, repository
from training.errors import Refused
from training.model_files import load_source
from training.sources import Loaded, one_line

log = logging.getLogger(__name__)

PROB_TOLERANCE = {"features": 1e-5, "image": 1e-4}


class ImportRefused(Refused, ValueError):
    """The model cannot be served as it is; the message says why (nothing was written)."""


@dataclass
class ImportOptions:
    """What the user said about the model, beyond what the file says itself."""

    path: Path
    repository: Path
    name: str | None = None
    classes: list[str] | None = None
    output: str | None = None  # "logits" / "probabilities"; required for .onnx files
    scale: float | None = None  # None: from the model's own preprocessing (pixel_scale)
    offset: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    background: str = "none"
    resize: str = "stretch"
    interpolation: str = "bilinear"  # as Keras' image loaders resize
    antialias: bool = False
    features: list[str] | None = None
    sample: Path | None = None
    target: str | None = None


def input_spec(shape: tuple, options: ImportOptions, loaded: Loaded | None = None) -> Spec:
    """Feature vectors for rank 2, images for rank 4 (NHWC when the last axis is 1 or 3)."""
    dims = list(shape[1:])
    if any(d is None or d <= 0 for d in dims):
        raise ImportRefused(
            f"the model's input shape {list(shape)} has unknown sizes beyond "
            "the batch; export it with a fixed input size"
        )
    if len(dims) == 1:
        if loaded is not None and loaded.table is not None:
            return _folded_spec(dims[0], options, loaded.table)
        return _feature_spec(dims[0], options, loaded.feature_names if loaded else None)
    if len(dims) != 3:
        raise ImportRefused(
            f"the model's input has rank {len(dims) + 1} ({list(shape)}); "
            "expected [batch, features] or [batch, height, width, channels]"
        )
    if dims[2] in (1, 3):
        (height, width, channels), layout = dims, "nhwc"
    elif dims[0] in (1, 3):
        (channels, height, width), layout = dims, "nchw"
    else:
        raise ImportRefused(f"image input {list(shape)} has neither 1 nor 3 channels first or last")
    per_channel = {}
    for key in ("mean", "std"):
        values = getattr(options, key)
        if values is not None and len(values) not in (1, channels):
            raise ImportRefused(f"--{key} needs 1 or {channels} values, got {len(values)}")
        per_channel[key] = None if values is None else tuple(values * (channels // len(values)))
    if (options.mean is None) != (options.std is None):
        raise ImportRefused("--mean and --std go together")
    if options.std is not None and min(options.std) <= 0:
        raise ImportRefused("--std values must be positive")
    in_model = loaded.pixel_preprocessing(layout) if loaded is not None else None
    try:
        chosen = pixel_scale.decide(
            in_model, options.scale, options.offset, options.mean is not None
        )
    except pixel_scale.ScaleRefused as exc:
        raise ImportRefused(str(exc)) from None
    log.info("%s", chosen.note)
    return ImageSpec(
        height,
        width,
        channels,
        255.0,
        layout,
        options.background,
        options.background != "none",
        scale=chosen.scale,
        offset=chosen.offset,
        mean=per_channel["mean"],
        std=per_channel["std"],
        resize=options.resize,
        interpolation=options.interpolation,
        antialias=options.antialias,
    )


def _folded_spec(n: int, options: ImportOptions, folded) -> FeatureSpec:
    """Keras' own preprocessing read into the contract (``training.feature_layers``)."""
    if options.features or options.mean is not None or options.std is not None:
        raise ImportRefused(
            "the model's preprocessing layers give its features and their scaling: leave out "
            "--features, --mean and --std"
        )
    spec = folded.spec
    if spec.n_features != n:
        raise ImportRefused(f"the folded features are {spec.n_features}; the network takes {n}")
    return spec


def _feature_spec(n: int, options: ImportOptions, inputs: tuple[str, ...] | None) -> FeatureSpec:
    """Named features (a model of one input per feature names them itself); --mean/--std
    (1 or n values) are the standardisation the model expects, applied by the service to
    the raw values clients send."""
    if inputs is not None and options.features and list(options.features) != list(inputs):
        raise ImportRefused(
            f"the model's inputs name its features {', '.join(inputs)}: leave out --features "
            "or give those, in that order"
        )
    names = options.features or list(inputs or ()) or [f"x{i + 1}" for i in range(n)]
    if len(names) != n:
        raise ImportRefused(f"--features names {len(names)} features; the model takes {n}")
    image_only = (
        options.offset is not None
        or options.scale is not None
        or options.background != "none"
        or options.resize != "stretch"
        or options.interpolation != "bilinear"
        or options.antialias
    )
    if image_only:
        raise ImportRefused(
            "--scale, --offset, --background, --resize, --interpolation and --antialias are "
            "for image models; this one takes feature vectors"
        )
    if (options.mean is None) != (options.std is None):
        raise ImportRefused("--mean and --std go together")
    if options.mean is None or options.std is None:
        return FeatureSpec(n, tuple(names))
    if {len(options.mean), len(options.std)} - {1, n} or min(options.std) <= 0:
        raise ImportRefused(f"--mean and --std need 1 or {n} values, --std positive")
    mean = tuple(options.mean * (n // len(options.mean)))
    std = tuple(options.std * (n // len(options.std)))
    return FeatureSpec(n, tuple(names), mean, std)


def classes_for(width: int, options: ImportOptions) -> tuple[str, list[str]]:
    """(task, class names) from the output width and --classes."""
    n = 2 if width == 1 else width
    names = options.classes or [str(i) for i in range(n)]
    if len(names) != n:
        raise ImportRefused(
            f"--classes names {len(names)} classes; the model's output [batch, {width}] has {n}"
        )
    if len(set(names)) != len(names):
        raise ImportRefused("--classes has duplicate names")
    return ("binary" if n == 2 else "multiclass"), names


def import_model(options: ImportOptions, command: str) -> Path:
    """Load, inspect, strip, export, check parity, publish; return the version's folder."""
    from training import samples

    loaded = load_source(options.path, options.output)
    shape_in, width = loaded.input_shape, loaded.output_width
    spec = input_spec(shape_in, options, loaded)
    task, classes = classes_for(width, options)
    if width == 1 and loaded.activation == "softmax":
        raise ImportRefused("a softmax over one output is always 1: not a classifier")
    if width > 1 and loaded.activation == "sigmoid":
        raise ImportRefused(
            f"a sigmoid over {width} outputs is multi-label; this service "
            "serves single-label classifiers (softmax)"
        )
    name = repository.model_name(options.name, options.path.stem)
    data = samples.for_parity(spec, options.sample, classes, options.target)
    x = data.tensor
    with repository.staged_version(options.repository, name) as (staging, version):
        onnx_path = staging / contract.MODEL_FILE
        loaded.write_onnx(onnx_path)
        try:
            outputs = export.onnx_logits(onnx_path, x)
        except Exception as exc:  # onnxruntime's own refusal (IR version, missing op, ...)
            raise ImportRefused(f"onnxruntime cannot run the model: {one_line(exc)}") from None
        if loaded.kind == "probabilities" and not heads.looks_like_probabilities(outputs):
            raise ImportRefused(
                "the model's outputs are not probabilities (outside [0, 1], or rows not "
                "summing to 1: log-probabilities or logits?); pass --output logits"
            )
        declared_logits = loaded.kind == "logits" and not loaded.removed and width > 1
        if declared_logits and heads.looks_like_probabilities(outputs):
            raise ImportRefused(
                "the model's outputs lie in [0, 1] and sum to 1 in every row: they are "
                "probabilities, not logits (pass --output probabilities)"
            )
        parity = {**_parity(loaded, outputs, x, spec), "inputs": data.description}
        if data.files is not None and isinstance(spec, ImageSpec):
            parity["end_to_end"] = _end_to_end(loaded, spec, data, outputs)
        out_spec = OutputSpec(loaded.kind)
        meta = build_metadata(
            options, loaded, spec, (task, classes), parity, onnx_path, (name, version), command
        )
        plots = samples.evaluate(meta, out_spec, outputs, data, staging / "report")
        contract.write(staging, meta)
        from training.report import write_markdown

        write_markdown(meta, plots, staging / "report" / "README.md")
    published = Path(options.repository) / name / str(version)
    log.info("published %s (%s)", published, loaded.describe())
    return published


def _end_to_end(loaded: Loaded, spec: ImageSpec, data, outputs: np.ndarray) -> dict[str, Any]:
    """Raw files through the service against raw files through Keras' loader (Keras models
    with a declared resize; an ONNX file has no Keras to compare with)."""
    from training import end_to_end

    if not hasattr(loaded, "original") or spec.interpolation is None:
        return {"files": 0, "note": "no Keras model to compare with (an ONNX file)"}
    served = OutputSpec(loaded.kind).probabilities(outputs)
    try:
        record = end_to_end.check(loaded, spec, data.files, data.pixels, served)
    except end_to_end.EndToEndMismatch as exc:
        raise ImportRefused(str(exc)) from None
    log.info(
        "end to end on %d sample files: classes agree on %.1f%%, probabilities within %.3g",
        record["files"],
        100 * record.get("class_agreement", 1.0),
        record.get("max_abs_prob_diff", 0.0),
    )
    return record


def _parity(loaded: Loaded, outputs: np.ndarray, x: np.ndarray, spec: Spec) -> dict[str, Any]:
    """ONNX against the original: raw outputs, and the service's probabilities against the
    original model's own probabilities (its softmax included)."""
    tolerance = export.PARITY_TOLERANCE
    raw = export.compare(loaded.reference_outputs(x), outputs, tolerance)
    service_probs = OutputSpec(loaded.kind).probabilities(outputs)
    original = loaded.reference_probabilities(x)
    if original.shape[1] == 1:
        original = np.concatenate([1.0 - original, original], axis=1)
    prob_diff = float(np.max(np.abs(service_probs - original)))
    prob_tolerance = PROB_TOLERANCE[spec.kind]
    if not raw.ok or prob_diff > prob_tolerance:
        raise ImportRefused(
            f"the ONNX export does not reproduce the model on {raw.n_samples} inputs: max "
            f"|output diff| {raw.max_abs_diff:.3g} (tolerance {tolerance:g}), max |probability "
            f"diff| {prob_diff:.3g} (tolerance {prob_tolerance:g}), {raw.argmax_mismatches} "
            "predicted classes differ"
        )
    return {**raw.to_dict(), "max_abs_prob_diff": prob_diff}


def build_metadata(
    options: ImportOptions,
    loaded: Loaded,
    spec: Spec,
    labels: tuple[str, list[str]],
    parity: dict[str, Any],
    onnx_path: Path,
    where: tuple[str, int],
    command: str,
) -> dict[str, Any]:
    """What is known about an imported model; the rest is null."""
    from datetime import UTC, datetime

    from training.pipeline import library_versions

    (task, classes), (name, version) = labels, where
    activation = "sigmoid" if loaded.output_width == 1 else "softmax"
    return {
        "schema_version": contract.schema_version(spec.to_dict()),
        "name": name,
        "version": version,
        "description": f"{task} classifier imported from {options.path.name} "
        f"({loaded.format}; {loaded.describe()})",
        "task": task,
        "classes": classes,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "kind": "imported",
            "format": loaded.format,
            "file": options.path.name,
            "final_activation": loaded.removed or "",
            "output_kind": loaded.kind,
            "command": command,
        },
        "dataset": None,
        "input": {
            "name": loaded.input_name,
            "shape": [None, *loaded.input_shape[1:]],
            "dtype": "float32",
        },
        "output": {
            "name": loaded.output_name,
            "shape": [None, loaded.output_width],
            "dtype": "float32",
            "kind": loaded.kind,
            "activation": activation,
        },
        "preprocessing": spec.to_dict(),
        "architecture": loaded.architecture(),
        "metrics": {"test": None},
        "training": None,
        "export": {
            "tool": loaded.tool,
            "opset": loaded.opset,
            "parity": parity,
            "onnx_sha256": contract.sha256_file(onnx_path),
            "onnx_bytes": onnx_path.stat().st_size,
        },
        "versions": library_versions(loaded.format != "onnx"),
        "files": {"model": contract.MODEL_FILE, "report": "report/README.md"},
    }
