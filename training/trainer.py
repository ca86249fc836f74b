"""Build, compile and fit a network on a dataset, keeping the best validation epoch."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from service.preprocessing import FeatureSpec, features_to_tensor, pixels_to_tensor
from training import architectures
from training.config import TrainConfig
from training.datasets import Dataset

log = logging.getLogger(__name__)


def to_tensor(dataset: Dataset, x: np.ndarray) -> np.ndarray:
    """Raw dataset arrays -> network input, through the service's preprocessing."""
    if isinstance(dataset.spec, FeatureSpec):
        return features_to_tensor(x, dataset.spec)
    return pixels_to_tensor(x, dataset.spec)


def build_model(config: TrainConfig, dataset: Dataset) -> keras.Model:
    """The configured architecture for the dataset's input and classes.

    A CNN fitted in fewer than 100 steps an epoch gets BatchNormalization momentum 0.9.
    """
    n_classes = len(dataset.class_names)
    if config.arch == "mlp":
        spec = dataset.spec
        input_dim = (
            spec.n_features if isinstance(spec, FeatureSpec) else int(np.prod(spec.tensor_shape))
        )
        return architectures.build_mlp(
            input_dim, n_classes, config.hidden, config.activation, config.dropout
        )
    if config.arch == "cnn":
        if isinstance(dataset.spec, FeatureSpec):
            raise ValueError(f"a CNN needs images; {dataset.name} has feature vectors")
        return architectures.build_cnn(
            dataset.spec.tensor_shape,
            n_classes,
            config.filters,
            config.convs_per_block,
            config.dense,
            config.dropout,
            bn_momentum=0.99 if len(dataset.x_train) >= 100 * config.batch_size else 0.9,
        )
    raise ValueError(f"unknown architecture {config.arch!r}")


def compile_model(model: keras.Model, n_classes: int, learning_rate) -> keras.Model:
    """Adam on the from-logits cross-entropy, with logit-aware accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=architectures.loss_for(n_classes),
        metrics=[architectures.accuracy_metric(n_classes)],
    )
    return model


class KeepBest(keras.callbacks.Callback):
    """Remember the weights of the lowest validation loss and restore them at the end."""

    def __init__(self, monitor: str = "val_loss") -> None:
        super().__init__()
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            log.info(
                "restored weights of epoch %d (%s %.4f)", self.best_epoch, self.monitor, self.best
            )


@dataclass
class FitResult:
    """A fitted model, how it got there, and its validation split (for calibration)."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    duration_s: float
    n_train: int
    n_validation: int
    x_validation: np.ndarray
    y_validation: np.ndarray


class Augmented(keras.utils.PyDataset):
    """Shuffled NHWC batches, each image shifted by up to ``shift`` pixels (the edge
    repeated into the gap) and, with ``flip``, mirrored left-right half the time."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shift: int, flip: bool,
                 seed: int) -> None:  # fmt: skip
        super().__init__()
        self.x, self.y, self.batch_size, self.shift, self.flip = x, y, batch_size, shift, flip
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch, s = self.x[rows], self.shift
        if s:
            h, w = batch.shape[1:3]
            padded = np.pad(batch, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
            dy, dx = self.rng.integers(0, 2 * s + 1, (2, len(rows)))
            batch = np.stack(
                [padded[k, dy[k] : dy[k] + h, dx[k] : dx[k] + w] for k in range(len(rows))]
            )
        if self.flip:
            mirror = self.rng.random(len(rows)) < 0.5
            batch[mirror] = batch[mirror, :, ::-1]
        return batch, self.y[rows]


def split_validation(dataset: Dataset, fraction: float, seed: int):
    """Stratified hold-out from the training set: (x_fit, y_fit, x_val, y_val)."""
    from sklearn.model_selection import train_test_split

    x_fit, x_val, y_fit, y_val = train_test_split(
        dataset.x_train, dataset.y_train, test_size=fraction, random_state=seed,
        stratify=dataset.y_train,
    )  # fmt: skip
    return x_fit, y_fit, x_val, y_val


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """A constant rate, or cosine decay to 1% over the configured epochs."""
    if config.lr_decay == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.01
        )
    if config.lr_decay != "none":
        raise ValueError(f"unknown lr_decay {config.lr_decay!r}")
    return config.learning_rate


def fit(config: TrainConfig, dataset: Dataset, verbose: int | str = "auto") -> FitResult:
    """Seeded fit with early stopping on validation loss; the best epoch's weights are kept."""
    keras.utils.set_random_seed(config.seed)
    x_fit, y_fit, x_val, y_val = split_validation(dataset, config.validation_split, config.seed)
    x_fit_t, x_val_t = to_tensor(dataset, x_fit), to_tensor(dataset, x_val)
    model = build_model(config, dataset)
    steps = math.ceil(len(x_fit_t) / config.batch_size)
    compile_model(model, len(dataset.class_names), learning_rate_schedule(config, steps))
    keep_best = KeepBest()
    callbacks = [
        keep_best,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
    ]
    started = time.perf_counter()
    if config.augment_shift or config.augment_flip:
        if x_fit_t.ndim != 4:
            raise ValueError("augmentation shifts and flips NHWC images; this input is not one")
        train = Augmented(x_fit_t, y_fit, config.batch_size, config.augment_shift,
                          config.augment_flip, config.seed)  # fmt: skip
        history = model.fit(train, validation_data=(x_val_t, y_val), epochs=config.epochs,
                            callbacks=callbacks, verbose=verbose)  # fmt: skip
    else:
        history = model.fit(
            x_fit_t,
            y_fit,
            validation_data=(x_val_t, y_val),
            epochs=config.epochs,
            batch_size=config.batch_size,
            callbacks=callbacks,
            verbose=verbose,
        )
    duration = time.perf_counter() - started
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return FitResult(
        model=model,
        history=hist,
        best_epoch=keep_best.best_epoch,
        best_val_loss=keep_best.best,
        epochs_run=len(hist["loss"]),
        duration_s=duration,
        n_train=len(x_fit_t),
        n_validation=len(x_val_t),
        x_validation=x_val_t,
        y_validation=np.asarray(y_val),
    )
