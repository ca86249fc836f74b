"""The lessons' learning-rate sweep: lr = start * 10**(epoch / 20), loss recorded per epoch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training import report, trainer
from training.config import TrainConfig
from training.datasets import Dataset

log = logging.getLogger(__name__)


def sweep_rate(epoch: int, start: float = 1e-4, per_decade: int = 20) -> float:
    """The rate for a (0-based) epoch of the sweep."""
    return start * 10 ** (epoch / per_decade)


@dataclass(frozen=True)
class LRSweep:
    """Loss per learning rate, and the rate the sweep suggests."""

    rates: np.ndarray
    losses: np.ndarray

    @property
    def best_rate(self) -> float:
        """The rate at the lowest (smoothed) loss."""
        return float(self.rates[int(np.argmin(smooth(self.losses)))])

    @property
    def suggested_rate(self) -> float:
        """About 10x below the loss minimum: fast, but short of the unstable region."""
        return self.best_rate / 10


def smooth(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centered rolling median: one lucky or unlucky epoch does not move the minimum.

    NaN/inf (a diverged sweep) count as very high losses.
    """
    finite = np.isfinite(values)
    v = np.where(finite, values, np.max(values[finite]) * 10 if finite.any() else 1.0)
    half = window // 2
    padded = np.pad(v, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def run_sweep(
    config: TrainConfig,
    dataset: Dataset,
    epochs: int = 100,
    start: float = 1e-4,
    steps_per_epoch: int | None = None,
    verbose: int | str = "auto",
) -> LRSweep:
    """Fit a fresh network while raising the rate each epoch; record the training loss."""
    keras.utils.set_random_seed(config.seed)
    x = trainer.to_tensor(dataset, dataset.x_train)
    y = dataset.y_train
    model = trainer.build_model(config, dataset)
    trainer.compile_model(model, len(dataset.class_names), start)
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch: sweep_rate(epoch, start))
    if steps_per_epoch:  # large datasets: each epoch sees a different slice
        size = min(len(x), steps_per_epoch * config.batch_size)
        rng = np.random.default_rng(config.seed)
        batches = [rng.choice(len(x), size, replace=False) for _ in range(epochs)]
        losses = []
        for epoch, idx in enumerate(batches):
            model.optimizer.learning_rate.assign(sweep_rate(epoch, start))
            hist = model.fit(x[idx], y[idx], batch_size=config.batch_size, epochs=1, verbose=0)
            losses.append(hist.history["loss"][0])
            log.info("epoch %d lr %.2e loss %.4f", epoch + 1, sweep_rate(epoch, start), losses[-1])
    else:
        hist = model.fit(
            x,
            y,
            batch_size=config.batch_size,
            epochs=epochs,
            callbacks=[schedule],
            verbose=verbose,
        )
        losses = hist.history["loss"]
    rates = np.array([sweep_rate(e, start) for e in range(len(losses))])
    return LRSweep(rates, np.array(losses, dtype=float))


def plot_sweep(sweep: LRSweep, title: str, path: Path) -> Path:
    """Loss against learning rate on a log axis, minimum and suggestion marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.semilogx(sweep.rates, sweep.losses, label="training loss")
    ax.semilogx(sweep.rates, smooth(sweep.losses), label="smoothed", alpha=0.7)
    ax.axvline(sweep.best_rate, color="red", ls="--", label=f"minimum {sweep.best_rate:.2e}")
    ax.axvline(
        sweep.suggested_rate, color="green", ls="--", label=f"suggested {sweep.suggested_rate:.2e}"
    )
    finite = sweep.losses[np.isfinite(sweep.losses)]
    ax.set_ylim(0, min(float(finite.max()), 3 * float(finite[0])) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return report.save_figure(fig, path)
