"""A table's raw values -> the model's features, as training encoded them: every case
(missing number, missing category, unseen category, boolean, numeric string), and the
service's tensor equal to training's for the same table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from service.contract import metadata as contract
from service.contract.preprocessing import FeatureSpec, PreprocessingError, spec_from_dict
from service.contract.tabular import Column, encode_rows, feature_names, is_missing

AGE = Column("age", "numeric", 40.0, indicator=True)
CLINIC = Column("clinic", "categorical", "north", True, ("north", "south"))
SMOKER = Column("smoker", "boolean", 0.0)
GRADE = Column("grade", "categorical", "2", False, ("1", "2", "3"), "ordinal")
COLUMNS = (AGE, CLINIC, SMOKER, GRADE)


def test_feature_names_follow_the_encoding():
    assert feature_names(COLUMNS) == (
        "age",
        "age (missing)",
        "clinic=north",
        "clinic=south",
        "clinic=<unknown>",
        "clinic (missing)",
        "smoker",
        "grade",
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"age": 30, "clinic": "south", "smoker": True, "grade": 3}, [30, 0, 0, 1, 0, 0, 1, 2]),
        (
            {"age": "30.5", "clinic": " north ", "smoker": "yes", "grade": "1"},
            [30.5, 0, 1, 0, 0, 0, 1, 0],
        ),
        ({"age": None, "clinic": "", "smoker": "NA", "grade": "2"}, [40, 1, 1, 0, 0, 1, 0, 1]),
        ({"grade": None, "age": None, "smoker": "y"}, [40, 1, 1, 0, 0, 1, 1, 1]),  # absent
        (
            {"age": float("nan"), "clinic": "west", "smoker": 0, "grade": 9},
            [40, 1, 0, 0, 1, 0, 0, 3],
        ),
        ({"age": 1e3, "clinic": 7, "smoker": "False", "grade": 2.0}, [1000, 0, 0, 0, 1, 0, 0, 1]),
        ([30, "south", False, "3"], [30, 0, 0, 1, 0, 0, 0, 2]),
    ],
)
def test_every_case_encodes_as_training_did(row, expected):
    assert encode_rows([row], COLUMNS, "instance").tolist() == [expected]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"age": "old"}, "instance: feature 'age' must be a number, got \"old\""),
        ({"age": True}, "feature 'age' must be a number, got true"),
        ({"age": "inf"}, "feature 'age' must be a number, got \"inf\""),
        ({"age": "1_000"}, "feature 'age' must be a number"),
        ({"age": 10**400}, "feature 'age' must be a finite number"),
        ({"clinic": float("inf")}, "feature 'clinic' must be a finite number or text"),
        ({}, "instance gives none of the model's features (all missing)"),
        ({"smoker": "maybe"}, "feature 'smoker' must be true or false, got \"maybe\""),
        ({"clinic": ["a"]}, "feature 'clinic' must be text or a number"),
        (
            {"height": 3},
            "unknown feature 'height'; the model's features: age, clinic, smoker, grade",
        ),
        ([1, 2], "instance has 2 values; the model takes 4 (age, clinic, smoker, grade)"),
        ("x", "instance must be an object of features by name, or a list"),
    ],
)
def test_a_bad_value_is_refused_naming_the_feature(row, message):
    spec = FeatureSpec(8, feature_names(COLUMNS), columns=COLUMNS)
    with pytest.raises(PreprocessingError) as caught:
        spec.rows_to_tensor([row], "instance")
    assert message in str(caught.value)


def test_without_imputation_a_missing_value_is_refused():
    columns = (Column("age", "numeric", None), Column("height", "numeric", None))
    with pytest.raises(PreprocessingError, match="instances\\[1\\]: feature 'age' is missing"):
        FeatureSpec(2, ("age", "height"), columns=columns).rows_to_tensor(
            [[1, 2], [None, 2]], "instances"
        )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("2.50", 2.5),
        ("2.0", 2),
        ("7", 7.0),
        (" 3e2", 300),
        (123456789012345678, "123456789012345678"),
    ],
)
def test_a_category_written_as_a_number_is_one_category(a, b):
    from service.contract.tabular import category

    assert category(a, "c") == category(b, "c")


@pytest.mark.parametrize("text", ["", " ", "NA", "n/a", "NaN", "null", "None", "#N/A"])
def test_missing_spellings(text):
    assert is_missing(text)
    assert not is_missing("0")
    assert not is_missing("none of them")


def test_the_contract_round_trips_and_is_checked(tmp_path):
    spec = FeatureSpec(8, feature_names(COLUMNS), (0.0,) * 8, (1.0,) * 8, COLUMNS)
    block = json.loads(json.dumps(spec.to_dict()))
    again = spec_from_dict(block)
    assert again.columns == COLUMNS
    rows = [{"age": 30, "clinic": "west"}, [None, "south", True, 1]]
    assert np.array_equal(again.rows_to_tensor(rows, "x"), spec.rows_to_tensor(rows, "x"))
    assert contract.schema_version(block) == 2
    bad = dict(block, feature_names=list(block["feature_names"])[::-1])
    with pytest.raises(contract.MetadataError, match="the columns' encodings"):
        contract._check_columns(bad["columns"], bad["feature_names"], 2)
    with pytest.raises(contract.MetadataError, match="needs schema_version 2"):
        contract._check_columns(block["columns"], block["feature_names"], 1)


def _dirty_csv(path, n=120, seed=0):
    """Every case: a missing number, a missing category, a category seen once (pooled with
    the unknown), booleans as text, numbers with surrounding spaces, an ID column."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "size", "colour", "fresh", "weight", "label"])
        for i in range(n):
            size = "" if i % 11 == 3 else f"{rng.normal(10, 3):.3f}"
            colour = ["red", "green", "blue"][i % 3] if i % 13 != 4 else "NA"
            colour = "violet" if i == 7 else colour
            fresh = ["yes", "no"][i % 2]
            weight = f" {rng.integers(1, 9)} "
            writer.writerow([f"row-{i}", size, colour, fresh, weight, ["a", "b"][i % 2]])


def test_the_services_tensor_is_trainings(tmp_path):
    """csv_dataset encodes the file for training; the service encodes the same rows, sent
    as JSON by name, from the contract alone: the tensors are equal."""
    from training.userdata import csv_dataset

    path = tmp_path / "dirty.csv"
    _dirty_csv(path)
    dataset = csv_dataset(path, "label")
    block = json.loads(json.dumps(dataset.spec.to_dict()))
    served = spec_from_dict(block)
    assert [c["name"] for c in block["columns"]] == ["size", "colour", "fresh", "weight"]
    assert [c["kind"] for c in block["columns"]] == ["numeric", "categorical", "boolean", "numeric"]
    assert set(block["columns"][1]["vocabulary"]) == {"red", "green", "blue"}
    assert "violet" not in block["columns"][1]["vocabulary"]  # seen once: the unknown slot
    with path.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    rows = [{k: v for k, v in r.items() if k not in ("id", "label")} for r in table]
    tensor = served.rows_to_tensor(rows, "instances")
    trained = dataset.spec.standardise(np.concatenate([dataset.x_train, dataset.x_test]))
    # the same rows in the split's order: match each served row to its training row
    as_json = served.rows_to_tensor(json.loads(json.dumps(rows)), "instances")
    assert np.array_equal(tensor, as_json)
    trained32 = trained.astype(np.float32)
    served_rows = {tuple(r) for r in tensor.tolist()}
    assert len(served_rows) == len(rows)  # distinct rows: the sets match row for row
    assert {tuple(r) for r in trained32.tolist()} == served_rows
