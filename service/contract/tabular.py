"""A table's raw values -> the model's feature vector, as training encoded them.

A tabular model's contract lists its *columns* (the raw features a client names), each
with its kind and what training learnt from the training split:

- ``numeric``: a number (a JSON number or a numeric string); a missing value becomes the
  training split's median;
- ``boolean``: true/false (JSON booleans, ``true``/``false``/``yes``/``no``/``1``/``0``);
  a missing value becomes the most frequent one;
- ``categorical``: text (numbers are read as their text, ``2.0`` as ``2``), one-hot over
  the vocabulary plus an ``unknown`` slot (values unseen in training, or too rare there),
  or ``ordinal`` (the vocabulary index; unknown = its length); a missing value becomes
  the most frequent category.

A column that had missing values in training is followed by a 0/1 missing-indicator
feature. The encoded vector is then standardised with the contract's mean and std (the
numbers' statistics from the training split; 0 and 1 for one-hot slots and indicators).
A value is missing when it is ``null``, absent, NaN, or one of :data:`MISSING` as text.

Pure python and numpy: training encodes its table with these functions, the service its
requests, so both make the same vector (tests/service/contract/test_tabular.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Text that means "no value", as pandas' read_csv has it by default (case-insensitive).
MISSING = frozenset(
    {"", "na", "n/a", "nan", "null", "none", "-nan", "#n/a", "#na", "<na>", "-1.#ind", "1.#ind"}
)
TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})


class TabularError(ValueError):
    """A raw value that is not what its column takes; the message names the column."""


class Missing(TabularError):
    """A missing value where the column has no imputation (``--missing refuse``)."""


def is_missing(value: Any) -> bool:
    """Whether a raw value (JSON or CSV text) means "no value"."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


_DECIMAL = frozenset("0123456789+-.eE")


def _decimal(text: str) -> float | None:
    """Text that is a plain decimal number (ASCII digits, sign, point, exponent; no ``_``,
    no ``inf``/``nan`` words, no other scripts' digits) as a float, else None."""
    text = text.strip()
    if not text or not set(text) <= _DECIMAL:
        return None
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def number(value: Any, name: str) -> float:
    """A present numeric value (a JSON number or decimal text) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TabularError(f"feature {name!r} must be a number, got {_shown(value)}")
    if isinstance(value, str):
        parsed = _decimal(value)
        if parsed is None:
            raise TabularError(f"feature {name!r} must be a number, got {_shown(value)}")
        out = parsed
    else:
        try:
            out = float(value)
        except OverflowError:  # an integer beyond float64
            out = math.inf
    if not math.isfinite(out):
        raise TabularError(f"feature {name!r} must be a finite number, got {_shown(value)}")
    return out


def boolean(value: Any, name: str) -> float:
    """A present boolean value as 1.0 or 0.0."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and value in (0, 1):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE:
            return 1.0
        if text in FALSE:
            return 0.0
    raise TabularError(f"feature {name!r} must be true or false, got {_shown(value)}")


def _number_text(value: float | int) -> str:
    """One text for one number, however it was written: whole numbers as integers
    (``2``, ``2.0``, ``"2.00"``), others as Python's shortest repr (``2.5`` for ``"2.50"``)."""
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if value.is_integer() else repr(value)


def category(value: Any, name: str) -> str:
    """A present categorical value as its text: numbers, and text that is a decimal number,
    canonically (``"2.50"`` and ``2.5`` are one category); other text as written, stripped;
    booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise TabularError(f"feature {name!r} must be a finite number or text")
        return _number_text(value)
    if isinstance(value, str):
        text = value.strip()
        parsed = _decimal(text)
        if parsed is None or not math.isfinite(parsed):
            return text
        if parsed.is_integer() and "." not in text and "e" not in text.lower():
            return str(int(text))  # exact, beyond float64's 2**53 too ("007" is 7)
        return _number_text(parsed)
    raise TabularError(f"feature {name!r} must be text or a number, got {_shown(value)}")


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _shown(value: Any) -> str:
    """A value as the client wrote it (JSON), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return _cut(text)


@dataclass(frozen=True)
class Column:
    """One raw feature and how training encoded it."""

    name: str
    kind: str
    impute: float | str | None = None  # None: a missing value is refused
    indicator: bool = False  # a missing-indicator feature follows
    vocabulary: tuple[str, ...] = ()
    encoding: str = "one_hot"
    unknown_first: bool = False  # the unknown slot before the vocabulary's (Keras' lookups)
    _index: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({v: i for i, v in enumerate(self.vocabulary)})

    @property
    def width(self) -> int:
        """How many of the model's features this column becomes."""
        one_hot = self.kind == "categorical" and self.encoding == "one_hot"
        return (len(self.vocabulary) + 1 if one_hot else 1) + self.indicator

    @property
    def features(self) -> tuple[str, ...]:
        """The names of the model's features this column becomes."""
        if self.kind == "categorical" and self.encoding == "one_hot":
            names = [f"{self.name}={v}" for v in self.vocabulary]
            unknown = f"{self.name}=<unknown>"
            names = [unknown, *names] if self.unknown_first else [*names, unknown]
        else:
            names = [self.name]
        return tuple(names + ([f"{self.name} (missing)"] if self.indicator else []))

    def value(self, raw: Any) -> float | str:
        """A present raw value read as this column's kind (numbers, 0/1, or text)."""
        if self.kind == "numeric":
            return number(raw, self.name)
        if self.kind == "boolean":
            return boolean(raw, self.name)
        return category(raw, self.name)

    def encode(self, raw: Any, out: list[float]) -> None:
        """Append this column's features for one raw value (missing included) to ``out``."""
        missing = is_missing(raw)
        if missing:
            if self.impute is None:
                raise Missing(f"feature {self.name!r} is missing and the model has no default")
            value: float | str = self.impute
        else:
            value = self.value(raw)
        if self.kind != "categorical":
            out.append(float(value))
        elif self.encoding == "ordinal":
            out.append(float(self._index.get(str(value), len(self.vocabulary))))
        else:
            slots = [0.0] * (len(self.vocabulary) + 1)
            index = self._index.get(str(value), -1)
            if self.unknown_first:
                slots[index + 1] = 1.0
            else:
                slots[index if index >= 0 else len(self.vocabulary)] = 1.0
            out.extend(slots)
        if self.indicator:
            out.append(1.0 if missing else 0.0)

    def to_dict(self) -> dict[str, Any]:
        """This column's entry in ``preprocessing.columns``."""
        block: dict[str, Any] = {"name": self.name, "kind": self.kind, "impute": self.impute}
        if self.indicator:
            block["missing_indicator"] = True
        if self.kind == "categorical":
            block.update(encoding=self.encoding, vocabulary=list(self.vocabulary))
            if self.unknown_first:
                block["unknown_slot"] = "first"
        return block

    @classmethod
    def from_dict(cls, block: Mapping[str, Any]) -> Column:
        """A column from its ``preprocessing.columns`` entry."""
        return cls(
            str(block["name"]),
            str(block["kind"]),
            block.get("impute"),
            bool(block.get("missing_indicator", False)),
            tuple(str(v) for v in block.get("vocabulary", ())),
            str(block.get("encoding", "one_hot")),
            block.get("unknown_slot", "last") == "first",
        )


def feature_names(columns: Sequence[Column]) -> tuple[str, ...]:
    """The model's feature names, in order, for these columns."""
    return tuple(name for column in columns for name in column.features)


def encode_rows(rows: Sequence[Any], columns: Sequence[Column], what: str) -> np.ndarray:
    """Rows of raw values -> (n, features) float64 before standardisation.

    A row is an object keyed by column name (absent = missing; an unknown name is refused)
    or a list of the columns' values in order."""
    names = {c.name for c in columns}
    out = np.empty((len(rows), sum(c.width for c in columns)))
    for i, row in enumerate(rows):
        where = f"{what}[{i}]" if len(rows) > 1 or what.endswith("s") else what
        if isinstance(row, Mapping):
            unknown = [k for k in row if k not in names]
            if unknown:
                raise TabularError(
                    f"{where}: unknown feature {_cut(repr(unknown[0]))}; the model's features: "
                    + ", ".join(c.name for c in columns)
                )
            values = [row.get(c.name) for c in columns]
        elif isinstance(row, list):
            if len(row) != len(columns):
                raise TabularError(
                    f"{where} has {len(row)} value{'s' if len(row) != 1 else ''}; the model "
                    f"takes {len(columns)} "
                    f"({', '.join(c.name for c in columns)})"
                )
            values = row
        else:
            raise TabularError(f"{where} must be an object of features by name, or a list")
        if all(is_missing(v) for v in values):
            raise TabularError(f"{where} gives none of the model's features (all missing)")
        encoded: list[float] = []
        try:
            for column, raw in zip(columns, values, strict=True):
                column.encode(raw, encoded)
        except TabularError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        out[i] = encoded
    return out
