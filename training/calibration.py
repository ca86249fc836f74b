"""Honest probabilities: temperature scaling fitted on the validation split, and the scores
that say whether it helped (ECE over 15 equal-width bins, NLL, Brier) with a plot.

The temperature divides the logits before the service's softmax/sigmoid
(``service.contract.postprocessing.OutputSpec``); it never changes the predicted class.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.postprocessing import OutputSpec

log = logging.getLogger(__name__)

BINS = 15
BOUNDS = (0.05, 20.0)  # the temperatures searched


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return OutputSpec("logits", temperature).probabilities(logits)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance to the one-hot truth, summed over classes (0..2)."""
    truth = np.zeros_like(probs)
    truth[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - truth) ** 2, axis=1)))


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, NLL and Brier score of probabilities against integer labels."""
    return {"ece": ece(probs, labels), "nll": nll(probs, labels), "brier": brier(probs, labels)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in ``BOUNDS`` that minimises the NLL (a bounded 1-D search)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    found = minimize_scalar(
        lambda log_t: nll(_probs(logits, float(np.exp(log_t))), labels),
        bounds=(np.log(BOUNDS[0]), np.log(BOUNDS[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def calibrate(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray | None,
    test_labels: np.ndarray | None,
) -> dict[str, Any]:
    """Fit the temperature on validation; keep it only where it lowers the validation NLL.

    Returns the ``metrics.calibration`` block (without the plot's file name).
    """
    fitted = fit_temperature(val_logits, val_labels)
    before = nll(_probs(val_logits, 1.0), val_labels)
    after = nll(_probs(val_logits, fitted), val_labels)
    # With every validation answer right, the NLL falls for ever as T -> 0 (or stops at the
    # search's bound): no optimum, and sharpening says nothing about new data.
    all_right = bool(np.all(_probs(val_logits, 1.0).argmax(axis=1) == val_labels))
    at_bound = all_right or not (BOUNDS[0] * 1.01 < fitted < BOUNDS[1] / 1.01)
    applied = after < before - 1e-6 and not at_bound
    temperature = fitted if applied else 1.0
    block: dict[str, Any] = {
        "temperature": round(temperature, 6),
        "applied": applied,
        "fitted_on": f"validation split ({len(val_labels)} samples)",
        "bins": BINS,
        "validation_nll": {"before": before, "after": after if applied else before},
    }
    if at_bound:
        block["note"] = (
            f"not applied: the NLL keeps falling to the search bound (T = {fitted:.3g}); the "
            "model separates the validation split, so it cannot tell the right temperature"
        )
    if test_logits is not None and test_labels is not None:
        block["test"] = {
            "before": scores(_probs(test_logits, 1.0), test_labels),
            "after": scores(_probs(test_logits, temperature), test_labels),
        }
    log.info(
        "temperature %.3f %s: validation NLL %.4f -> %.4f",
        fitted,
        "applied" if applied else "not applied (no gain)",
        before,
        after,
    )
    return block


def reliability_curve(probs: np.ndarray, labels: np.ndarray, bins: int = BINS):
    """(mean confidence, accuracy, count) per non-empty bin."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = [
        (confidence[which == b].mean(), correct[which == b].mean(), int((which == b).sum()))
        for b in range(bins)
        if (which == b).any()
    ]
    return np.array(rows).reshape(-1, 3)


def plot_reliability(
    test_logits: np.ndarray, labels: np.ndarray, temperature: float, path: Path
) -> Path:
    """Reliability diagram of the test set, before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for t, style in ((1.0, "o-"), (temperature, "s-")):
        probs = _probs(test_logits, t)
        curve = reliability_curve(probs, labels)
        ece_value = ece(probs, labels)
        ax.plot(curve[:, 0], curve[:, 1], style, label=f"T = {t:.3g} (ECE {ece_value:.4f})")
        if temperature == 1.0:
            break
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Reliability on the test set (15 bins)")
    ax.legend(loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def record(
    meta: dict[str, Any],
    block: dict[str, Any],
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    report_dir: Path,
) -> None:
    """Put the calibration block, the temperature the service applies, and the
    reliability diagram into a version being written."""
    plot_reliability(test_logits, test_labels, block["temperature"], report_dir / "reliability.png")
    block["plot"] = "report/reliability.png"
    meta["metrics"]["calibration"] = block
    if block["applied"]:
        meta["output"]["temperature"] = block["temperature"]
