"""A user's CSV as it comes: column kinds, categories, missing values, every problem at once.

The file is read with the csv module (no TensorFlow, no pandas), each column's kind
inferred (numeric where every present value is a number, boolean where every one is
true/false/yes/no, categorical otherwise; ``--numeric``/``--categorical``/``--drop``
force it; a text or whole-number column unique per row is an ID and dropped, with a note),
and every problem in the file collected into one table (line, column, value, what is
wrong) before anything is trained. What training learns of each column (imputation,
vocabulary) comes from the training split only and goes into the contract as
``service.contract.tabular.Column``s, which encode the table for training and requests
for the service alike.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from service.contract import tabular
from service.contract.tabular import Column, TabularError
from training.errors import Refused

SHOWN_PROBLEMS = 40  # rows of the problem table printed; the rest are counted


class TableError(Refused, ValueError):
    """The file has problems; the message is the table of all of them."""


@dataclass(frozen=True)
class Problem:
    line: int  # 1 = the header
    column: str
    value: str
    what: str


@dataclass
class Plan:
    """What to do with a file's columns: kinds by name (in file order), notes for the user."""

    kinds: dict[str, str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RawTable:
    """The chosen columns' cells (text, as written), their kinds, the labels, the notes."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    cells: list[list[str]]  # one row of len(names) per data row
    labels: list[str] | None
    notes: tuple[str, ...]


def _problem_table(path: Path, problems: list[Problem]) -> str:
    rows = [("line", "column", "value", "problem")] + [
        (
            str(p.line),
            p.column,
            repr(p.value) if len(p.value) <= 30 else repr(p.value[:27]) + "...",
            p.what,
        )
        for p in problems[:SHOWN_PROBLEMS]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    more = len(problems) - SHOWN_PROBLEMS
    tail = [f"... and {more} more"] if more > 0 else []
    head = f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}; nothing trained"
    return "\n".join([head, *lines, *tail])


def read_cells(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(the header, stripped; (line number, cells) of every row that is not blank)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            numbered = [(reader.line_num, row) for reader in [csv.reader(fh)] for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TableError(f"cannot read {path}: {exc}") from None
    numbered = [(n, r) for n, r in numbered if any(cell.strip() for cell in r)]
    if len(numbered) < 2:
        raise TableError(f"{path} needs a header row and at least one data row")
    return [h.strip() for h in numbered[0][1]], numbered[1:]


def _is_number(text: str) -> bool:
    try:
        tabular.number(text, "")
    except TabularError:
        return False
    return True


NUMERIC_SHARE = 0.9  # a column this much numbers is numeric: the rest are its problems


def _kind(values: list[str]) -> str:
    """The kind of a column from its present values."""
    numbers = sum(map(_is_number, values))
    if {v.strip().lower() for v in values} <= tabular.TRUE | tabular.FALSE:
        return "boolean" if numbers < len(values) else "numeric"
    return "numeric" if numbers >= NUMERIC_SHARE * len(values) else "categorical"


def _an_id(present: list[str], rows: int, kind: str) -> bool:
    """Unique per row and either text, or whole numbers that only go up (row numbers)."""
    if rows <= 10 or len(present) != rows or len(set(present)) != rows:
        return False
    if kind == "categorical":
        return True
    if kind != "numeric" or not all(float(v).is_integer() for v in present):
        return False
    numbers = [float(v) for v in present]
    return all(a < b for a, b in pairwise(numbers))


def read_table(
    path: Path,
    target: str | None,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
    drop: list[str] | None = None,
    missing: str = "impute",
) -> RawTable:
    """The file's feature columns as text with their kinds; every problem raised at once."""
    path = Path(path)
    header, numbered = read_cells(path)
    categorical, numeric, drop = list(categorical or ()), list(numeric or ()), list(drop or ())
    problems: list[Problem] = []
    seen = Counter(header)
    for name, count in seen.items():
        if count > 1 or not name:
            problems.append(Problem(1, name, name, "a column name must be given once"))
    named = [n for n in [target, *(features or ()), *categorical, *numeric, *drop] if n]
    absent = [n for n in dict.fromkeys(named) if n not in header]
    if absent:
        raise TableError(
            f"{path} has no column {', '.join(map(repr, absent))}; its columns: {', '.join(header)}"
        )
    for name in set(categorical) & set(numeric):
        problems.append(Problem(1, name, "", "given both --categorical and --numeric"))
    if target in (features or ()) or target in categorical or target in numeric:
        problems.append(Problem(1, str(target), "", "the target cannot also be a feature"))
    if problems:
        raise TableError(_problem_table(path, problems))
    chosen = [n for n in (features or header) if n != target and n not in drop and n in header]
    index = [header.index(n) for n in chosen]
    rows: list[list[str]] = []
    labels: list[str] = []
    for line, row in numbered:
        if len(row) != len(header):
            problems.append(
                Problem(line, "(row)", "", f"{len(row)} cells; the header has {len(header)}")
            )
            continue
        rows.append([row[i].strip() for i in index])
        if target is not None:
            label = row[header.index(target)].strip()
            if tabular.is_missing(label):
                problems.append(Problem(line, target, label, "the target (class) is missing"))
            labels.append(label)
    lines = [line for line, row in numbered if len(row) == len(header)]
    plan = Plan({})
    for c, name in enumerate(chosen):
        column = [r[c] for r in rows]
        present = [v for v in column if not tabular.is_missing(v)]
        where_missing = [lines[i] for i, v in enumerate(column) if tabular.is_missing(v)]
        if not present:
            problems.append(Problem(lines[0], name, "", "every value is missing: --drop it"))
            continue
        if missing == "refuse":
            problems += [Problem(n, name, "", "missing (--missing refuse)") for n in where_missing]
        kind = "numeric" if name in numeric else "categorical" if name in categorical else None
        if kind is None:
            kind = _kind(present)
            if name not in (features or ()) and _an_id(present, len(column), kind):
                plan.notes.append(f"column {name!r} is unique per row (an ID): dropped")
                continue
        if kind == "numeric":
            why = (
                "not a number (--numeric)"
                if name in numeric
                else "not a number (in a numeric column)"
            )
            problems += [
                Problem(lines[i], name, v, why)
                for i, v in enumerate(column)
                if not tabular.is_missing(v) and not _is_number(v)
            ]
        plan.kinds[name] = kind
    kept = [chosen.index(n) for n in plan.kinds]
    for i, row in enumerate(rows):
        if kept and all(tabular.is_missing(row[c]) for c in kept):
            problems.append(Problem(lines[i], "(row)", "", "every feature is missing"))
    if problems:
        problems.sort(key=lambda p: (p.line, p.column))
        raise TableError(_problem_table(path, problems))
    if not plan.kinds:
        raise TableError(f"{path}: no feature columns left")
    return RawTable(
        tuple(plan.kinds),
        tuple(plan.kinds.values()),
        [[r[c] for c in kept] for r in rows],
        labels if target is not None else None,
        tuple(plan.notes),
    )


def fit_columns(
    table: RawTable,
    train: np.ndarray,
    encode: str = "one_hot",
    min_count: int = 2,
    missing: str = "impute",
) -> tuple[Column, ...]:
    """Each column's encoding, learnt from the training rows ``train`` only: the median or
    most frequent value for imputation (none with ``missing="refuse"``), a missing
    indicator where the file had a missing value, the vocabulary (values seen at least
    ``min_count`` times, most frequent first; the rest share the unknown slot)."""
    columns = []
    for c, (name, kind) in enumerate(zip(table.names, table.kinds, strict=True)):
        everything = [row[c] for row in table.cells]
        indicator = missing == "impute" and any(tabular.is_missing(v) for v in everything)
        present = [table.cells[i][c] for i in train if not tabular.is_missing(table.cells[i][c])]
        probe = Column(name, kind)
        values = [probe.value(v) for v in present]
        impute: float | str | None
        vocabulary: tuple[str, ...] = ()
        if kind == "numeric":
            impute = float(np.median(values)) if values else 0.0
        else:
            counts = Counter(values)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            impute = ranked[0][0] if ranked else (0.0 if kind == "boolean" else "")
            if kind == "categorical":
                vocabulary = tuple(str(v) for v, n in ranked if n >= min_count) or (str(impute),)
        columns.append(
            Column(
                name,
                kind,
                impute if missing == "impute" else None,
                indicator,
                vocabulary,
                encode if kind == "categorical" else "one_hot",
            )
        )
    names = tabular.feature_names(columns)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TableError(
            f"the encoded features {twice[:5]} would be named twice (a category spelled like "
            "a column's slot): rename the column or the category"
        )
    return tuple(columns)


def standardisation(x_train: np.ndarray, columns: tuple[Column, ...]):
    """(mean, std) per feature: the training split's for numbers, 0 and 1 for one-hot
    slots and missing indicators (they stay 0/1), and for constant columns std 1."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    at = 0
    for column in columns:
        width = len(column.features)
        scaled = 1 if column.kind in ("numeric", "boolean") or column.encoding == "ordinal" else 0
        mean[at + scaled : at + width], std[at + scaled : at + width] = 0.0, 1.0
        at += width
    constant = std <= 1e-8 * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)
