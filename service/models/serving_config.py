"""``models/<name>/serving.json``: version policy, labels, weights, held versions, the
shadow and the alert thresholds of one model.

Validated by a JSON Schema (``serving_config.schema.json``) like ``metadata.json``; beyond
the schema, weights must name distinct versions and not all be zero, and a label the
weights or the shadow use must exist.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from service.contract.metadata import version_number

SCHEMA_PATH = Path(__file__).with_name("serving_config.schema.json")
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # as the schema's pattern says
STABLE = "stable"  # under new_versions hold, the label that promotes


class ServingConfigError(ValueError):
    """serving.json is malformed or contradicts itself."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of serving.json."""
    return json.loads(SCHEMA_PATH.read_text())


@dataclass(frozen=True)
class ServingConfig:
    """A model's serving rules (the defaults: every version, the latest for unversioned
    requests, no labels)."""

    policy: str = "all"  # "all", "latest" or "specific"
    latest: int = 0
    specific: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)  # version -> share, sum 1
    new_versions: str = "serve"  # "serve" or "hold"
    shadow: tuple[int, float] | None = None  # (version, fraction)
    alerts: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingConfig:
        """Validate and resolve (weights by label become weights by version)."""
        validator = jsonschema.Draft202012Validator(schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ServingConfigError(f"serving.json is invalid at {where}: {error.message}")
        policy = data.get("version_policy", "all")
        labels = {label: int(v) for label, v in data.get("labels", {}).items()}  # 1.0 -> 1
        weights: dict[int, float] = {}
        for key, share in data.get("weights", {}).items():
            number = version_number(key)
            if number is None:
                if key not in labels:
                    raise ServingConfigError(
                        f"serving.json weights name {key!r}, which is "
                        "neither a version number nor a label"
                    )
                number = labels[key]
            if number in weights:
                raise ServingConfigError(f"serving.json weights name version {number} twice")
            if not math.isfinite(share):
                raise ServingConfigError(f"serving.json weight {key!r} is not a finite number")
            weights[number] = float(share)
        total = sum(weights.values())  # inf when the shares overflow
        if weights and not (0 < total < math.inf):
            raise ServingConfigError("serving.json weights must be finite and not all zero")
        shares = {v: w / total for v, w in sorted(weights.items())}
        shadow = data.get("shadow")
        if shadow is not None:
            named = shadow["version"]
            number = labels.get(named) if isinstance(named, str) else named  # 2.0 -> 2
            if number is None:
                raise ServingConfigError(
                    f"serving.json shadow names {named!r}, which is not a label"
                )
            fraction = float(shadow.get("fraction", 1.0))
            if not math.isfinite(fraction):  # NaN passes the schema's bounds
                raise ServingConfigError("serving.json shadow fraction is not a finite number")
            shadow = (int(number), fraction)
        for key, threshold in data.get("alerts", {}).items():
            if not math.isfinite(threshold):
                raise ServingConfigError(f"serving.json alerts.{key} is not a finite number")
        return cls(
            policy="all" if policy == "all" else next(iter(policy)),
            latest=int(policy.get("latest", 0)) if isinstance(policy, dict) else 0,
            specific=tuple(sorted(int(v) for v in policy.get("specific", ())))
            if isinstance(policy, dict)
            else (),
            labels=labels,
            weights={v: share for v, share in shares.items() if share > 0},
            new_versions=data.get("new_versions", "serve"),
            shadow=shadow,
            alerts={k: float(v) for k, v in data.get("alerts", {}).items()},
        )

    @classmethod
    def read(cls, path: Path) -> ServingConfig:
        """The config in ``path`` (ServingConfigError when unreadable or invalid)."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ServingConfigError(f"serving.json cannot be read: {exc.strerror}") from None
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            raise ServingConfigError(f"serving.json is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def describe_policy(self) -> str:
        """``all``, ``latest 2`` or ``specific [1, 3]``."""
        if self.policy == "latest":
            return f"latest {self.latest}"
        if self.policy == "specific":
            return f"specific {list(self.specific)}"
        return "all"

    @property
    def hold(self) -> bool:
        """New versions are held until promoted."""
        return self.new_versions == "hold"

    def pinned(self) -> set[int]:
        """Versions served whatever the policy says: those labels, weights and the shadow
        name."""
        return (
            set(self.labels.values())
            | set(self.weights)
            | ({self.shadow[0]} if self.shadow else set())
        )

    def promoted(self) -> set[int]:
        """Versions these rules put in service under ``hold``: the one the label ``stable``
        names, those the weights name, those ``version_policy`` ``specific`` lists."""
        named = set(self.weights) | (set(self.specific) if self.policy == "specific" else set())
        return named | ({self.labels[STABLE]} if STABLE in self.labels else set())

    def to_dict(self) -> dict[str, Any]:
        """The resolved rules, for ``/models``."""
        return {
            "version_policy": self.describe_policy(),
            "labels": dict(self.labels),
            "weights": {str(v): round(w, 6) for v, w in self.weights.items()},
            "new_versions": self.new_versions,
            "shadow": {"version": self.shadow[0], "fraction": self.shadow[1]}
            if self.shadow
            else None,
            "alerts": dict(self.alerts),
        }


class WeightedChoice:
    """Picks a version for an unversioned request, in proportion to the weights of the
    versions being served."""

    def __init__(self, weights: dict[int, float]) -> None:
        total = sum(weights.values())
        if not (0 < total < math.inf):
            raise ValueError(f"weights must sum to a positive finite number: {weights}")
        self.versions = list(weights)
        self.shares = {v: w / total for v, w in weights.items()}
        self._bounds, running = [], 0.0
        for version in self.versions:
            running += weights[version] / total
            self._bounds.append(running)

    def pick(self) -> int:
        """One version, at random by weight."""
        i = bisect.bisect_right(self._bounds, random.random() * self._bounds[-1])
        return self.versions[min(i, len(self.versions) - 1)]
