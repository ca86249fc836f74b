"""The model repository contract: ``models/<name>/<version>/{model.onnx,metadata.json}``.

Both sides use this module: training validates what it writes, the service validates what
it reads. Beyond the JSON Schema it checks what a schema cannot: that the class list, the
task, the output width and the preprocessing agree with each other.

Imported models record what is known: ``dataset``, ``architecture``, ``training`` and
``metrics.test`` are ``null`` when nobody can know them.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("model_metadata.schema.json")
METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"


class MetadataError(ValueError):
    """metadata.json is missing, malformed, inconsistent, or does not match its model."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of metadata.json."""
    return json.loads(SCHEMA_PATH.read_text())


def schema_version(preprocessing: dict[str, Any]) -> int:
    """The schema version a model's metadata needs: 2 for a table's raw columns."""
    return 2 if "columns" in preprocessing else 1


def validate(metadata: dict[str, Any]) -> None:
    """Raise MetadataError unless metadata satisfies the schema and is self-consistent."""
    validator = jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    # best_match looks inside oneOf (a block or null) for the error that explains it.
    error = jsonschema.exceptions.best_match(validator.iter_errors(metadata))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise MetadataError(f"metadata.json is invalid at {where}: {error.message}")
    _check_consistency(metadata)


def _check_consistency(m: dict[str, Any]) -> None:
    n_classes, output = len(m["classes"]), m["output"]
    width, activation = output["shape"][-1], output["activation"]
    if m["task"] == "binary":
        if n_classes != 2 or (width, activation) not in ((1, "sigmoid"), (2, "softmax")):
            raise MetadataError(
                "a binary model has 2 classes and 1 output with sigmoid (or 2 with softmax)"
            )
    elif width != n_classes or activation != "softmax":
        raise MetadataError(
            f"a multiclass model has one output per class and softmax: {n_classes} classes, "
            f"output width {width}"
        )
    if output["kind"] == "probabilities" and output.get("temperature", 1.0) != 1.0:
        raise MetadataError("a temperature applies to logits, not to probabilities")
    pre, shape = m["preprocessing"], m["input"]["shape"][1:]
    if pre["kind"] == "features":
        expected, per = [pre["n_features"]], pre["n_features"]
        if len(pre["feature_names"]) != pre["n_features"]:
            raise MetadataError("feature_names must name every feature")
        if "columns" in pre:
            _check_columns(pre["columns"], pre["feature_names"], m["schema_version"])
    else:
        per = pre["channels"]
        h, w, c = pre["height"], pre["width"], pre["channels"]
        expected = {"flat": [h * w * c], "nchw": [c, h, w]}.get(pre["layout"], [h, w, c])
        if pre.get("framing") == "object" and c != 1:
            raise MetadataError("framing 'object' is for grayscale models (1 channel)")
        if pre.get("framing") == "object" and "interpolation" in pre:
            raise MetadataError("framing 'object' has its own resize: no interpolation with it")
    if shape != expected:
        raise MetadataError(f"input shape {shape} does not match preprocessing {expected}")
    for key in ("mean", "std"):
        if key in pre and len(pre[key]) != per:
            raise MetadataError(f"preprocessing {key} needs {per} values, got {len(pre[key])}")


def _check_columns(columns: list, names: list, schema_version: int) -> None:
    from service.contract.tabular import Column, feature_names

    if schema_version < 2:
        raise MetadataError("preprocessing.columns needs schema_version 2")
    if len({c["name"] for c in columns}) != len(columns):
        raise MetadataError("preprocessing.columns names a feature twice")
    encoded = feature_names([Column.from_dict(c) for c in columns])
    if list(encoded) != list(names):
        raise MetadataError(
            f"feature_names must be the columns' encodings, in order: {list(encoded)[:6]}..."
        )
    for c in columns:
        impute = c["impute"]
        if impute is None:
            continue
        wanted = str if c["kind"] == "categorical" else (int, float)
        if not isinstance(impute, wanted) or isinstance(impute, bool):
            raise MetadataError(f"column {c['name']!r}: impute must suit its kind {c['kind']}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read(version_dir: Path, verify_checksum: bool = True) -> dict[str, Any]:
    """Load, validate and (by default) check the ONNX file's sha256 of one model version."""
    version_dir = Path(version_dir)
    path = version_dir / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise MetadataError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{path} is not valid JSON: {exc}") from None
    validate(metadata)
    if metadata["name"] != version_dir.parent.name or str(metadata["version"]) != version_dir.name:
        raise MetadataError(
            f"{path} describes {metadata['name']}/{metadata['version']}, "
            f"but lives in {version_dir.parent.name}/{version_dir.name}"
        )
    if verify_checksum:
        onnx_path = version_dir / MODEL_FILE
        if not onnx_path.is_file():
            raise MetadataError(f"{onnx_path} does not exist")
        actual = sha256_file(onnx_path)
        if actual != metadata["export"]["onnx_sha256"]:
            raise MetadataError(
                f"{onnx_path} has sha256 {actual}, metadata.json records "
                f"{metadata['export']['onnx_sha256']}"
            )
    return metadata


def write(version_dir: Path, metadata: dict[str, Any]) -> Path:
    """Validate, then write metadata.json into a version directory."""
    validate(metadata)
    path = Path(version_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return path


def version_number(text: str) -> int | None:
    """The version a folder name or URL segment names: a positive number in ASCII digits,
    at most 18 of them, without a leading zero (``1``, not ``01``); anything else (``0``,
    ``²``, ``1.5``) names no version."""
    if 0 < len(text) < 19 and text.isascii() and text.isdigit() and text[0] != "0":
        return int(text)
    return None


def versions(repository: Path, name: str) -> list[int]:
    """The integer versions present for a model, ascending."""
    model_dir = Path(repository) / name
    if not model_dir.is_dir():
        return []
    numbers = (version_number(p.name) for p in model_dir.iterdir() if p.is_dir())
    return sorted(n for n in numbers if n is not None)


def version_dirs(repository: Path) -> list[Path]:
    """``<repo>/<name>/<version>`` for every version of every model, in order."""
    repository = Path(repository)
    return [
        repository / model_dir.name / str(number)
        for model_dir in sorted(p for p in repository.iterdir() if p.is_dir())
        for number in versions(repository, model_dir.name)
    ]


def latest_version_dirs(repository: Path) -> list[Path]:
    """``<repo>/<name>/<highest version>`` for every model in the repository."""
    repository = Path(repository)
    found = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()):
        numbers = versions(repository, model_dir.name)
        if numbers:
            found.append(model_dir / str(numbers[-1]))
    return found
