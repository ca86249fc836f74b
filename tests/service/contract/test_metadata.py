"""service.contract.metadata: the JSON Schema and the checks a schema cannot express."""

import copy
import json
import shutil
from pathlib import Path

import pytest

from service.contract import metadata as contract

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
def good() -> dict:
    return json.loads((DATA / "metadata_circles.json").read_text())


def test_example_is_valid(good):
    contract.validate(good)


def test_schema_is_itself_valid():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(contract.schema())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.pop("classes"), "'classes' is a required property"),
        (lambda m: m.update(task="regression"), "at task"),
        (lambda m: m["output"].update(kind="scores"), "at output/kind"),
        (lambda m: m["input"].update(shape=[1, 2]), "at input/shape/0"),
        (lambda m: m["export"].update(opset=0), "at export/opset"),
        (lambda m: m["export"].update(onnx_sha256="xyz"), "at export/onnx_sha256"),
        (lambda m: m.update(name="Bad Name!"), "at name"),
        (lambda m: m.update(surprise=1), "Additional properties"),
        (lambda m: m["metrics"]["test"].update(accuracy=1.5), "at metrics/test/accuracy"),
        (lambda m: m.update(created_at="yesterday"), "at created_at"),
    ],
)
def test_schema_violations_are_reported_with_their_location(good, mutate, message):
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(contract.MetadataError, match=message):
        contract.validate(bad)


def test_binary_needs_one_logit(good):
    good["output"]["shape"] = [None, 2]
    with pytest.raises(contract.MetadataError, match="binary model has 2 classes and 1 output"):
        contract.validate(good)


def test_multiclass_needs_one_logit_per_class(good):
    good["task"] = "multiclass"
    good["classes"] = ["a", "b", "c"]
    good["output"].update(activation="softmax", shape=[None, 2])
    with pytest.raises(contract.MetadataError, match="3 classes, output width 2"):
        contract.validate(good)


def test_input_shape_must_match_preprocessing(good):
    good["input"]["shape"] = [None, 3]
    with pytest.raises(contract.MetadataError, match=r"input shape \[3\] does not match"):
        contract.validate(good)


def test_image_mean_std_need_one_value_per_channel(good):
    good["input"]["shape"] = [None, 3, 2, 1]
    good["preprocessing"] = {
        "kind": "image",
        "height": 2,
        "width": 1,
        "channels": 3,
        "pixel_max": 255.0,
        "scale": 1.0,
        "layout": "nchw",
        "background": "none",
        "invert_light_background": False,
        "mean": [0.5, 0.5],
        "std": [0.2, 0.2],
    }
    with pytest.raises(contract.MetadataError, match="mean needs 3 values, got 2"):
        contract.validate(good)
    good["preprocessing"].update(mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0])
    contract.validate(good)  # NCHW, RGB, scale 1: an imported model's block


def test_rgb_models_cannot_use_object_framing(good):
    good["input"]["shape"] = [None, 4, 4, 3]
    good["preprocessing"] = {
        "kind": "image",
        "height": 4,
        "width": 4,
        "channels": 3,
        "pixel_max": 255.0,
        "scale": 1 / 255,
        "layout": "nhwc",
        "background": "none",
        "invert_light_background": False,
        "framing": "object",
    }
    with pytest.raises(contract.MetadataError, match="framing 'object' is for grayscale"):
        contract.validate(good)


def test_two_way_softmax_is_a_binary_model(good):
    good["output"].update(shape=[None, 2], activation="softmax")
    contract.validate(good)
    good["output"].update(activation="sigmoid")
    with pytest.raises(contract.MetadataError, match="binary model has 2 classes"):
        contract.validate(good)


def test_imported_model_records_unknowns_as_null(good):
    good.update(dataset=None, training=None, architecture=None)
    good["metrics"]["test"] = None
    good["output"].update(kind="probabilities")
    good["source"] = {"kind": "imported", "format": "onnx", "file": "model.onnx"}
    contract.validate(good)
    good["output"]["temperature"] = 1.5
    with pytest.raises(contract.MetadataError, match="temperature applies to logits"):
        contract.validate(good)


def _version_dir(tmp_path: Path, meta: dict, onnx_bytes: bytes = b"onnx") -> Path:
    vdir = tmp_path / meta["name"] / str(meta["version"])
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(onnx_bytes)
    meta["export"]["onnx_sha256"] = contract.sha256_file(vdir / "model.onnx")
    contract.write(vdir, meta)
    return vdir


def test_read_round_trip_with_checksum(tmp_path, good):
    vdir = _version_dir(tmp_path, good)
    assert contract.read(vdir) == good


def test_read_rejects_a_changed_onnx_file(tmp_path, good):
    vdir = _version_dir(tmp_path, good)
    (vdir / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(contract.MetadataError, match="has sha256"):
        contract.read(vdir)
    assert contract.read(vdir, verify_checksum=False)["name"] == "circles"


def test_read_rejects_misplaced_version(tmp_path, good):
    vdir = _version_dir(tmp_path, good)
    moved = vdir.parent / "7"
    shutil.move(vdir, moved)
    with pytest.raises(contract.MetadataError, match="lives in circles/7"):
        contract.read(moved)


def test_read_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(contract.MetadataError, match="does not exist"):
        contract.read(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(contract.MetadataError, match="not valid JSON"):
        contract.read(tmp_path)


def test_write_refuses_invalid_metadata(tmp_path, good):
    del good["task"]
    with pytest.raises(contract.MetadataError):
        contract.write(tmp_path, good)
    assert not (tmp_path / "metadata.json").exists()


def test_versions_and_latest(tmp_path):
    for name, numbers in {"a": ["1", "2", "10"], "b": ["3"], "c": []}.items():
        for n in numbers:
            (tmp_path / name / n).mkdir(parents=True)
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "a" / ".staging-x").mkdir()
    assert contract.versions(tmp_path, "a") == [1, 2, 10]
    assert contract.versions(tmp_path, "missing") == []
    assert contract.latest_version_dirs(tmp_path) == [tmp_path / "a" / "10", tmp_path / "b" / "3"]
