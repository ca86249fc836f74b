"""Build, compile and fit a network on a dataset, keeping the best validation epoch."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from service.contract.preprocessing import (
    FeatureSpec,
    features_to_tensor,
    pixels_to_tensor,
    scale_pixels,
)
from training import architectures
from training.config import TrainConfig
from training.datasets import Dataset
from training.userdata import hold_out

log = logging.getLogger(__name__)


def to_tensor(dataset: Dataset, x: np.ndarray) -> np.ndarray:
    """Raw dataset arrays -> network input, through the service's preprocessing."""
    if isinstance(dataset.spec, FeatureSpec):
        return features_to_tensor(x, dataset.spec)
    if dataset.spec.interpolation is not None:  # decoded and resized here: kernels may ring
        return scale_pixels(x, dataset.spec)
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


def augmented(x: np.ndarray, y: np.ndarray, config: TrainConfig):
    """Endless shuffled NHWC batches from ``tf.data`` (one pass = one epoch of
    ``ceil(len(x) / batch_size)`` steps): each image shifted by up to ``config.augment_shift``
    pixels (edges mirrored into the gap), with ``config.augment_flip`` mirrored left-right half
    the time, and with chance ``config.augment_erase`` a random rectangle replaced by noise
    (random erasing, Zhong et al. 2020). The work runs in TensorFlow's threads, overlapping the
    fit (a Python generator here doubled the epoch time)."""
    import tensorflow as tf

    shift, flip, erase = config.augment_shift, config.augment_flip, config.augment_erase
    height, width, channels = x.shape[1:]

    def one(image, label):
        if shift:
            padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]], mode="SYMMETRIC")
            image = tf.image.random_crop(padded, (height, width, channels))
        if flip:
            image = tf.image.random_flip_left_right(image)
        if erase:
            image = _erase(image, erase)
        return image, label

    # Shuffle row numbers, not images: a shuffle buffer of 54,000 images is refilled, one
    # image at a time, at the start of every epoch (about 30 s on 2 cores for Fashion-MNIST).
    # One endless iterator: a new one each epoch re-embedded the images in its graph (7-35 s
    # before the first batch of every other epoch).
    images, labels = tf.constant(x), tf.constant(y)
    order = tf.data.Dataset.range(len(x))
    order = order.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
    data = order.map(
        lambda i: one(tf.gather(images, i), tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return data.batch(config.batch_size).repeat().prefetch(tf.data.AUTOTUNE)


def _erase(image, chance: float, area=(0.02, 0.25), aspect=(0.3, 3.3)):
    """With ``chance``, one rectangle of ``area`` (fraction of the image) and ``aspect``
    (height / width, log-uniform) replaced by uniform noise in [0, 1]."""
    import tensorflow as tf

    height, width = image.shape[0], image.shape[1]
    size = tf.random.uniform([], *area) * height * width
    ratio = tf.exp(tf.random.uniform([], math.log(aspect[0]), math.log(aspect[1])))
    h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(size * ratio)), tf.int32), 1, height)
    w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(size / ratio)), tf.int32), 1, width)
    top = tf.random.uniform([], 0, height - h + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, width - w + 1, dtype=tf.int32)
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    inside = inside & (tf.random.uniform([]) < chance)
    noise = tf.random.uniform(tf.shape(image), dtype=image.dtype)
    return tf.where(inside[:, :, None], noise, image)


def split_validation(dataset: Dataset, fraction: float, seed: int):
    """Stratified hold-out from the training set: (x_fit, y_fit, x_val, y_val)."""
    x_fit, x_val, y_fit, y_val = hold_out(dataset.x_train, dataset.y_train, fraction, seed)
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
    keras.mixed_precision.set_global_policy(config.precision)  # "float32" unless asked
    try:
        model = build_model(config, dataset)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    steps = math.ceil(len(x_fit_t) / config.batch_size)
    compile_model(model, len(dataset.class_names), learning_rate_schedule(config, steps))
    keep_best = KeepBest()
    callbacks = [
        keep_best,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
    ]
    started = time.perf_counter()
    if config.augment_shift or config.augment_flip or config.augment_erase:
        if x_fit_t.ndim != 4:
            raise ValueError(
                "augmentation shifts, flips and erases NHWC images; this input is not one"
            )
        history = model.fit(
            augmented(x_fit_t, y_fit, config),
            epochs=config.epochs,
            steps_per_epoch=steps,
            validation_data=(x_val_t, y_val),
            callbacks=callbacks,
            verbose=verbose,
        )
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
    if config.precision != "float32":  # the same weights (kept in float32) in a float32 net
        trained, model = model, build_model(config, dataset)
        model.set_weights(trained.get_weights())
    if config.mirror_average:
        if x_fit_t.ndim != 4:
            raise ValueError("--mirror-average mirrors NHWC images; this input is not one")
        model = architectures.mirror_averaged(model)
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
