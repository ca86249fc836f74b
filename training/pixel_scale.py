"""What an imported image model does to pixels itself, and so what the service must do.

A Keras model may carry its preprocessing: ``Rescaling``, ``Normalization``, the
``keras.applications`` models' own layers (``include_preprocessing``), or
``preprocess_input`` called on its input (ops in the graph). Whatever they are, the part
of the graph before the first layer that learns is measured as it is: fed black, white per
channel and noise, it must be affine, and its gain and offset say what range of raw pixels
it was built for. The service then sends raw pixels (0..255) when the model scales them
itself, and applies ``--scale/--offset/--mean/--std`` only for what happened outside.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

log = logging.getLogger(__name__)

# Layers that shape pixels rather than learn from them (identity at inference, or affine).
_PREPROCESSING = {"Rescaling", "Normalization", "Resizing", "CenterCrop", "Identity"}
# What the first learning layer of a network is built for: inputs of order one.
_SANE_REACH = 10.0
_SANE_SPAN = 0.1


class ScaleRefused(ValueError):
    """The pixel scale asked for contradicts the model's own preprocessing."""


@dataclass(frozen=True)
class InModel:
    """The model's own preprocessing, measured: ``y = x @ gain + bias`` per pixel."""

    layers: tuple[str, ...]
    gain: np.ndarray  # (channels in, channels out)
    bias: np.ndarray  # (channels out,)
    kinds: tuple[str, ...] = ()  # the layers' classes (Rescaling, Normalization, TrueDivide)

    @property
    def identity(self) -> bool:
        """No preprocessing at all (or one that does nothing)."""
        eye = np.eye(self.gain.shape[0], self.gain.shape[1])
        return bool(np.allclose(self.gain, eye, atol=1e-6) and np.allclose(self.bias, 0, atol=1e-6))

    def reach(self, scale: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per channel that the first learning layer sees for raw 0..255 pixels
        scaled by the service (``raw * scale + offset``)."""
        ends = np.array([offset, 255.0 * scale + offset])
        spread = ends[:, None, None] * self.gain[None, :, :]  # (2, in, out)
        low = spread.min(axis=0).sum(axis=0) + self.bias
        high = spread.max(axis=0).sum(axis=0) + self.bias
        return low, high

    def sane(self, scale: float, offset: float) -> bool:
        """Whether that range is what a network's first layer is built for."""
        low, high = self.reach(scale, offset)
        return bool(np.max(np.abs([low, high])) <= _SANE_REACH and np.min(high - low) >= _SANE_SPAN)

    def describe(self) -> str:
        low, high = self.reach(1.0, 0.0)
        where = ", ".join(f"{lo:.3g}..{hi:.3g}" for lo, hi in zip(low, high, strict=True))
        return f"{' + '.join(self.layers)} (raw 0..255 pixels become {where})"


def measure(model, layout: str) -> InModel | None:
    """The preprocessing before the model's first learning layer, or None where it cannot
    be measured (no Keras graph, not affine, a shape it changes)."""
    import keras

    names, kinds, first = [], [], None
    for op in getattr(model, "operations", []):
        kind = type(op).__name__
        if kind == "InputLayer":
            continue
        if (
            not isinstance(op, keras.layers.Layer)
            or kind in _PREPROCESSING
            or kind.startswith("Random")
        ):
            names.append(op.name)
            kinds.append(kind)
            continue
        first = op
        break
    if first is None or len(model.inputs) != 1:
        return None
    shape = tuple(model.inputs[0].shape[1:])
    if not names:
        channels = shape[-1] if layout == "nhwc" else shape[0]
        return InModel((), np.eye(channels), np.zeros(channels))
    try:
        front = keras.Model(model.inputs, first.input)
    except Exception:  # a graph that does not cut there (several inputs, shared layers)
        log.debug("cannot cut %s before %s", model.name, first.name, exc_info=True)
        return None
    measured = _affine(front, shape, layout, tuple(names))
    return None if measured is None else replace(measured, kinds=tuple(kinds))


def _affine(front, shape: tuple, layout: str, names: tuple[str, ...]) -> InModel | None:
    channels = shape[-1] if layout == "nhwc" else shape[0]
    probes = [np.zeros(shape, np.float32)]
    for c in range(channels):
        probe = np.zeros(shape, np.float32)
        if layout == "nhwc":
            probe[..., c] = 255.0
        else:
            probe[c] = 255.0
        probes.append(probe)
    noise = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    out = np.asarray(front.predict(np.stack([*probes, noise]), verbose=0), np.float64)
    if out.ndim != 4:
        return None
    if layout == "nchw":
        out = np.moveaxis(out, 1, -1)
        noise = np.moveaxis(noise, 0, -1)
    if out.shape[-1] != channels or out.shape[1:3] != noise.shape[:2]:
        return None  # resized or recoloured in the graph: not one affine map per pixel
    bias = out[0].mean(axis=(0, 1))
    gain = np.stack([(out[1 + c] - out[0]).mean(axis=(0, 1)) / 255.0 for c in range(channels)])
    predicted = noise @ gain + bias
    span = max(float(np.ptp(out[1:])), 1e-6)
    if float(np.max(np.abs(predicted - out[-1]))) > 1e-3 * span:
        return None  # not affine
    return InModel(names, gain, bias)


@dataclass(frozen=True)
class Scale:
    """What the service does to raw pixels, and the line the import prints about it."""

    scale: float
    offset: float
    note: str


def decide(
    in_model: InModel | None, scale: float | None, offset: float | None, standardised: bool
) -> Scale:
    """The outside scale: the user's (checked against the model's own preprocessing), else
    raw pixels when the model scales them itself, else 1/255 (Keras' examples)."""
    given = scale is not None or offset is not None or standardised
    if scale is None:
        scale = 1 / 255  # Keras' examples: Rescaling(1/255) outside the model
        if in_model is not None and not in_model.identity and not given:
            # The model scales pixels itself: raw pixels, unless it was built for [0, 1].
            scale = 1.0 if in_model.sane(1.0, 0.0) or not in_model.sane(1 / 255, 0.0) else scale
    offset = 0.0 if offset is None else offset
    if in_model is None:
        how = "given" if given else "assumed"
        return Scale(
            scale,
            offset,
            f"pixel scale {how}: raw 0..255 pixels x {scale:.6g} + {offset:g} (the model's "
            "own preprocessing cannot be read: no Keras layers); pass --scale/--offset "
            "if it was trained otherwise",
        )
    if in_model.identity:
        how = "given" if given else "assumed (the model has no Rescaling or Normalization)"
        return Scale(
            scale,
            offset,
            f"pixel scale {how}: raw 0..255 pixels x {scale:.6g} + {offset:g}; pass "
            "--scale 1 if the model was trained on raw pixels",
        )
    layer = in_model.layers[0]
    outside_identity = scale == 1.0 and offset == 0.0 and not standardised
    rescales = "Rescaling" in in_model.kinds
    if rescales and not outside_identity:
        raise ScaleRefused(
            f"layer {layer!r} already scales pixels inside the model ({in_model.describe()}); "
            "drop --scale/--offset/--mean/--std (the service then sends raw 0..255 pixels)"
        )
    if not standardised and not in_model.sane(scale, offset):
        low, high = in_model.reach(scale, offset)
        better = "--scale 1/255" if in_model.sane(1 / 255, 0.0) else "--scale 1"
        raise ScaleRefused(
            f"layer {layer!r} was not built for pixels x {scale:.6g} + {offset:g}: it would "
            f"see {float(low.min()):.3g}..{float(high.max()):.3g}; pass {better}"
        )
    return Scale(
        scale,
        offset,
        f"pixel scale from the model: {in_model.describe()}; the service sends raw pixels"
        + ("" if outside_identity else f" x {scale:.6g} + {offset:g}"),
    )
