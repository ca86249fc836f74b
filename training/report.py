"""Evaluation report: test metrics (from onnxruntime's logits) and PNG plots beside the model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt
import numpy as np

from service.contract.postprocessing import OutputSpec, predicted_indices, probabilities
from service.contract.preprocessing import FeatureSpec
from training.calibration import nll
from training.datasets import Dataset

log = logging.getLogger(__name__)


def classification_metrics(
    outputs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    output: OutputSpec | None = None,
) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix of the model's
    outputs (logits, or probabilities for a model that outputs them)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    output = output or OutputSpec()
    predicted = output.indices(outputs)
    indices = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "runtime": "onnxruntime",
        "n_samples": len(labels),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": nll(output.probabilities(outputs), labels),
        "per_class": per_class,
        "macro_avg": {
            "precision": float(np.mean(precision)),
            "recall": float(np.mean(recall)),
            "f1": float(np.mean(f1)),
            "support": int(np.sum(support)),
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
    }


def plot_training_curves(history: dict[str, list[float]], best_epoch: int, path: Path) -> Path:
    """Loss and accuracy per epoch, training vs validation, best epoch marked."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves")
    return save_figure(fig, path)


def plot_confusion_matrix(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: Path):
    """Confusion matrix as counts and as row percentages (recall per true class)."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    pct = np.divide(100.0 * cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    n = len(class_names)
    size = max(5.0, 0.6 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, data, title, fmt in (
        (axes[0], cm, "counts", "{:d}"),
        (axes[1], pct, "row % (of each true class)", "{:.1f}"),
    ):
        ax.imshow(data, cmap="Blues")
        ax.set_title(title)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        threshold = data.max() / 2 if data.max() else 1
        for i in range(n):
            for j in range(n):
                value = int(data[i, j]) if fmt == "{:d}" else float(data[i, j])
                ax.text(
                    j,
                    i,
                    fmt.format(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if data[i, j] > threshold else "black",
                )
    fig.suptitle("Confusion matrix (test set, onnxruntime)")
    return save_figure(fig, path)


def plot_decision_boundary(
    logits_fn: Callable[[np.ndarray], np.ndarray], dataset: Dataset, path: Path
) -> Path:
    """Predicted class over the 2-D plane, with the test points on top (errors as crosses)."""
    X, y = dataset.x_test, dataset.y_test
    allx = np.concatenate([dataset.x_train, X])
    lo, hi = allx.min(axis=0) - 0.5, allx.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(np.float32)
    grid_logits = logits_fn(grid)
    n = len(dataset.class_names)
    zz = predicted_indices(grid_logits).reshape(gx.shape)
    predicted = predicted_indices(logits_fn(X.astype(np.float32)))
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    ax.contourf(
        gx, gy, zz, levels=np.arange(n + 1) - 0.5, colors=[cmap(i) for i in range(n)], alpha=0.25
    )
    if n == 2:
        p_inner = probabilities(grid_logits)[:, 1].reshape(gx.shape)
        ax.contour(gx, gy, p_inner, levels=[0.5], colors="k", linewidths=1)
    right = predicted == y
    for i, name in enumerate(dataset.class_names):
        sel = (y == i) & right
        ax.scatter(X[sel, 0], X[sel, 1], s=14, color=cmap(i), edgecolor="k", lw=0.3, label=name)
    ax.scatter(
        X[~right, 0],
        X[~right, 1],
        s=60,
        marker="x",
        color="red",
        label=f"misclassified ({int((~right).sum())})",
    )
    ax.set_title(f"{dataset.name}: decision regions and test points")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_sample_predictions(
    dataset: Dataset, logits: np.ndarray, path: Path, n: int = 24, seed: int = 0
) -> Path:
    """A grid of test images titled true vs predicted; wrong ones in red.

    Feature datasets get a scatter of test points colored by prediction instead.
    """
    predicted = predicted_indices(logits)
    confidence = probabilities(logits).max(axis=1)
    names = dataset.class_names
    if isinstance(dataset.spec, FeatureSpec):
        return _feature_samples(dataset, predicted, path)
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(predicted != dataset.y_test)
    right = np.flatnonzero(predicted == dataset.y_test)
    n = min(n, len(dataset.y_test))
    n_wrong = max(min(len(wrong), n // 4), n - len(right))  # always show a few mistakes
    picks = np.concatenate(
        [
            rng.choice(right, n - n_wrong, replace=False),
            rng.choice(wrong, n_wrong, replace=False) if n_wrong else np.array([], dtype=int),
        ]
    ).astype(int)
    cols = 6
    fig, axes = plt.subplots(int(np.ceil(n / cols)), cols, figsize=(cols * 2.1, 2.5 * n / cols))
    spec = dataset.spec
    for ax, i in zip(axes.ravel(), picks, strict=False):  # spare axes stay blank
        if spec.channels == 1:
            ax.imshow(
                dataset.x_test[i].reshape(spec.height, spec.width),
                cmap="gray",
                vmin=0,
                vmax=spec.pixel_max,
            )
        else:
            rgb = dataset.x_test[i].reshape(spec.height, spec.width, spec.channels)
            ax.imshow(np.clip(rgb / spec.pixel_max, 0, 1))
        ok = predicted[i] == dataset.y_test[i]
        ax.set_title(
            f"true: {names[dataset.y_test[i]]}\npred: {names[predicted[i]]} "
            f"({confidence[i]:.0%})" + ("" if ok else " ✗"),
            fontsize=8,
            color="black" if ok else "red",
        )
        ax.axis("off")
    fig.suptitle(f"{dataset.name}: sample test predictions (wrong ones in red)")
    return save_figure(fig, path)


def _feature_samples(dataset: Dataset, predicted: np.ndarray, path: Path) -> Path:
    X, y = dataset.x_test, dataset.y_test
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(dataset.class_names):
        sel = predicted == i
        ax.scatter(X[sel, 0], X[sel, 1], s=14, color=cmap(i), label=f"predicted {name}")
    wrong = predicted != y
    ax.scatter(
        X[wrong, 0],
        X[wrong, 1],
        s=90,
        facecolors="none",
        edgecolors="red",
        label=f"wrong ({int(wrong.sum())})",
    )
    ax.set_title(f"{dataset.name}: test predictions")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_markdown(metadata: dict[str, Any], plots: Sequence[str], path: Path) -> Path:
    """A human-readable summary of the model: what is known of it, and its test metrics."""
    m, test = metadata, metadata["metrics"]["test"]
    arch, training, parity = m["architecture"], m["training"], m["export"]["parity"]
    output = m["output"]
    lines = [
        f"# {m['name']} v{m['version']}",
        "",
        f"- task: {m['task']}, classes: {', '.join(m['classes'])}",
        f"- output: {output['kind']}"
        + (
            " (the service applies " + output["activation"] + " once)"
            if output["kind"] == "logits"
            else " (passed through: no second activation)"
        ),
    ]
    if "source" in m and m["source"]["kind"] == "imported":
        src = m["source"]
        lines.append(
            f"- imported from `{src.get('file', '?')}` ({src.get('format', '?')}); "
            f"final activation: {src.get('final_activation') or 'none found'}"
        )
    if arch:
        lines.append(f"- architecture: {arch['kind']}, {arch['parameters']:,} parameters")
    if test:
        keras = f" (Keras: {test['keras_accuracy']:.4f})" if "keras_accuracy" in test else ""
        lines.append(
            f"- test accuracy (onnxruntime): **{test['accuracy']:.4f}** on "
            f"{test['n_samples']} samples{keras}; loss {test['loss']:.4f}"
        )
    else:
        lines.append("- test metrics: unknown (no labelled data given)")
    lines.append(
        f"- parity: max |ONNX - reference| = {parity['max_abs_diff']:.3g}"
        + (
            f", max |probability diff| = {parity['max_abs_prob_diff']:.3g}"
            if "max_abs_prob_diff" in parity
            else ""
        )
        + f", {parity['argmax_mismatches']} argmax mismatches"
        + (f" on {parity['inputs']}" if "inputs" in parity else "")
    )
    calibration = m["metrics"].get("calibration")
    if calibration:
        lines.append(
            f"- calibration: temperature {calibration['temperature']:.4g} "
            f"({'applied' if calibration['applied'] else 'not applied: no gain'})"
        )
        if "test" in calibration:
            b, a = calibration["test"]["before"], calibration["test"]["after"]
            lines.append(
                f"  - test ECE {b['ece']:.4f} -> {a['ece']:.4f}, NLL {b['nll']:.4f} -> "
                f"{a['nll']:.4f}, Brier {b['brier']:.4f} -> {a['brier']:.4f}"
            )
    if training:
        lines += [
            f"- trained {training['epochs_run']} epochs (best: {training['best_epoch']}) "
            f"in {training['duration_s']:.1f} s",
            f"- command: `{training['command']}`",
        ]
    if test:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
            f"| {row['support']} |"
            for name, row in test["per_class"].items()
        ]
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def save_figure(fig, path: Path) -> Path:
    """Write a figure as PNG (creating folders) and release it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
