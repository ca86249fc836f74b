"""train-csv's reading of a table as it comes: kinds, IDs, every problem at once, and what
training learns of each column from the training split only."""

from __future__ import annotations

import numpy as np
import pytest

from service.contract.tabular import Column
from training import tables


def _file(tmp_path, text: str):
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_kinds_are_inferred_and_can_be_forced(tmp_path):
    rows = "\n".join(
        f"{i},{i % 3},{'yes' if i % 2 else 'no'},{['a', 'b'][i % 2]},{i * 0.5},c{i % 2}"
        for i in range(12)
    )
    path = _file(tmp_path, "id,code,flag,word,x,y\n" + rows + "\n")
    table = tables.read_table(path, "y")
    assert dict(zip(table.names, table.kinds, strict=True)) == {
        "code": "numeric",
        "flag": "boolean",
        "word": "categorical",
        "x": "numeric",
    }
    assert table.notes == ("column 'id' is unique per row (an ID): dropped",)
    forced = tables.read_table(path, "y", categorical=["code"], drop=["x"])
    assert dict(zip(forced.names, forced.kinds, strict=True)) == {
        "code": "categorical",
        "flag": "boolean",
        "word": "categorical",
    }


def test_every_problem_is_reported_at_once(tmp_path):
    path = _file(tmp_path, "a,b,c,y\n1,x,2,p\n2,,zz,q\n3\n4,y,5,\n5,y,6,p\n")
    with pytest.raises(tables.TableError) as caught:
        tables.read_table(path, "y", numeric=["c"], missing="refuse")
    lines = str(caught.value).splitlines()
    assert lines[0].endswith("4 problems; nothing trained")
    assert [line.split()[:2] for line in lines[2:]] == [
        ["3", "b"],
        ["3", "c"],
        ["4", "(row)"],
        ["5", "y"],
    ]


def test_unknown_columns_and_contradictions(tmp_path):
    path = _file(tmp_path, "a,b,y\n1,2,p\n")
    with pytest.raises(tables.TableError, match="has no column 'z', 'w'; its columns: a, b, y"):
        tables.read_table(path, "y", features=["z"], drop=["w"])
    with pytest.raises(tables.TableError, match="given both --categorical and --numeric"):
        tables.read_table(path, "y", categorical=["a"], numeric=["a"])
    empty = _file(tmp_path, "a,b,y\n1,,p\n2,NA,q\n")
    with pytest.raises(tables.TableError, match="every value is missing: --drop it"):
        tables.read_table(empty, "y")


def test_what_is_learnt_comes_from_the_training_rows_only(tmp_path):
    rows = [
        "1,red,yes,p",
        "3,red,no,p",
        ",blue,,q",
        "100,green,yes,q",
        "5,red,yes,p",
        "7,blue,no,q",
    ]
    path = _file(tmp_path, "x,colour,flag,y\n" + "\n".join(rows) + "\n")
    table = tables.read_table(path, "y")
    train = np.array([0, 1, 2, 4, 5])  # row 3 (x=100, the only "green") is held out
    x, colour, flag = tables.fit_columns(table, train, min_count=2)
    assert x == Column("x", "numeric", 4.0, True)  # the median of 1, 3, 5, 7
    assert colour == Column("colour", "categorical", "red", False, ("red", "blue"))
    assert flag == Column("flag", "boolean", 0.0, True)  # yes 2, no 2: a tie goes to the smaller
    ordinal = tables.fit_columns(table, train, encode="ordinal", min_count=3)[1]
    assert ordinal.vocabulary == ("red",)
    assert ordinal.encoding == "ordinal"
    refused = tables.fit_columns(table, train, missing="refuse")
    assert [c.impute for c in refused] == [None, None, None]
    assert not any(c.indicator for c in refused)


def test_one_hot_slots_and_indicators_are_not_standardised():
    columns = (Column("x", "numeric", 0.0, True), Column("c", "categorical", "a", False, ("a",)))
    x = np.array([[1.0, 0, 1, 0], [3.0, 1, 0, 1]])
    mean, std = tables.standardisation(x, columns)
    assert mean.tolist() == [2.0, 0.0, 0.0, 0.0]
    assert std.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_a_numeric_column_with_a_typo_is_a_problem_not_a_category(tmp_path):
    cells = [str(i * 1.5) for i in range(20)]
    cells[7] = "1,5"  # a decimal comma
    cells[9] = "1_000"  # float() would take it; a table should not
    text = "x,y\n" + "\n".join(f'"{c}",{"ab"[i % 2]}' for i, c in enumerate(cells)) + "\n"
    with pytest.raises(tables.TableError) as caught:
        tables.read_table(_file(tmp_path, text), "y")
    message = str(caught.value)
    assert "2 problems" in message
    assert "'1,5'" in message
    assert "'1_000'" in message
    assert "not a number (in a numeric column)" in message


def test_ids_are_text_or_rising_whole_numbers_and_never_a_named_feature(tmp_path):
    rng = np.random.default_rng(0)
    salary = rng.permutation(np.arange(30_000, 30_000 + 50 * 7, 7))  # unique, not rising
    rows = [f"{i + 1},{s},{'ab'[i % 2]}" for i, s in enumerate(salary)]
    path = _file(tmp_path, "row,salary,y\n" + "\n".join(rows) + "\n")
    table = tables.read_table(path, "y")
    assert table.names == ("salary",)
    assert table.notes == ("column 'row' is unique per row (an ID): dropped",)
    named = tables.read_table(path, "y", features=["row", "salary"])
    assert named.names == ("row", "salary")


def test_a_row_without_any_feature_and_names_twice_are_refused(tmp_path):
    path = _file(tmp_path, "a,b,y\n1,x,p\n,,q\n3,y,p\n")
    with pytest.raises(tables.TableError, match="every feature is missing"):
        tables.read_table(path, "y")
    clash = _file(tmp_path, "c,c=x,y\nx,1,p\nx,2,q\n<unknown>,3,p\n<unknown>,4,q\n")
    table = tables.read_table(clash, "y", categorical=["c"])
    with pytest.raises(tables.TableError, match="would be named twice"):
        tables.fit_columns(table, np.arange(4))
