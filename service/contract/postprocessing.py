"""Logits -> probabilities and labels: pure numpy functions, applied once, at inference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any finite logits (the row max is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function without overflow for large |logit|: exp(-log(1 +
    e^-z)), with ``logaddexp`` computing log(1 + e^-z) stably for either sign."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(n, k) logits -> (n, classes) probabilities; one binary logit gives two columns."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (batch, outputs), got shape {z.shape}")
    if z.shape[1] == 1:
        p = sigmoid(z[:, 0])
        return np.stack([1.0 - p, p], axis=1)
    return softmax(z)


def predicted_indices(logits: np.ndarray) -> np.ndarray:
    """Winning class index per row (logit > 0 for a single binary logit)."""
    z = np.asarray(logits)
    if z.shape[1] == 1:
        return (z[:, 0] > 0).astype(np.int64)
    return np.argmax(z, axis=1)


@dataclass(frozen=True)
class OutputSpec:
    """What the model's output is and how it becomes probabilities: the ``output`` block.

    ``logits`` are divided by the fitted ``temperature`` and go through the one
    softmax/sigmoid; ``probabilities`` (a model whose final activation could not be
    removed) pass through untouched: never a second softmax.
    """

    kind: str = "logits"  # or "probabilities"
    temperature: float = 1.0

    @classmethod
    def from_dict(cls, block: Mapping[str, Any]) -> OutputSpec:
        """From metadata.json's ``output`` block."""
        return cls(str(block["kind"]), float(block.get("temperature", 1.0)))

    @property
    def has_logits(self) -> bool:
        """Whether the model's raw output is logits (and can be shown as such)."""
        return self.kind == "logits"

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """(n, k) model outputs -> (n, classes) probabilities."""
        if self.kind == "logits":
            if self.temperature != 1.0:
                outputs = np.asarray(outputs, dtype=np.float64) / self.temperature
            return probabilities(outputs)
        p = np.clip(np.asarray(outputs, dtype=np.float64), 0.0, 1.0)
        if p.shape[1] == 1:
            return np.concatenate([1.0 - p, p], axis=1)
        return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)

    def indices(self, outputs: np.ndarray) -> np.ndarray:
        """Winning class per row (temperature never changes the winner)."""
        if self.kind == "logits":
            return predicted_indices(outputs)
        z = np.asarray(outputs)
        return (z[:, 0] > 0.5).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The k most probable (class, probability) pairs per row, best first."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [(class_names[j], float(row[j])) for j in idx]
        for row, idx in zip(probs, order, strict=True)
    ]
