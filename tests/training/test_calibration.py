"""training.calibration: the scores, and temperature scaling that recovers a known one."""

import numpy as np
import pytest

from training import calibration


def test_scores_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 1])
    # NLL: -(log .9 + log .4 + log .8) / 3
    assert calibration.nll(probs, labels) == pytest.approx(-(np.log(0.9 * 0.4 * 0.8)) / 3)
    # Brier: ((.1^2 + .1^2) + (.6^2 + .6^2) + (.2^2 + .2^2)) / 3
    assert calibration.brier(probs, labels) == pytest.approx((0.02 + 0.72 + 0.08) / 3)
    # ECE, 15 bins: confidences .9 (right), .6 (wrong), .8 (right) fall in 3 bins
    assert calibration.ece(probs, labels) == pytest.approx((0.1 + 0.6 + 0.2) / 3)


def _sampled(temperature: float, n: int = 20_000, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 4))
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.7, 2.5])
def test_fit_recovers_the_temperature_that_made_the_labels(true_t):
    logits, labels = _sampled(true_t)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_calibrate_lowers_nll_and_ece_of_an_overconfident_model():
    logits, labels = _sampled(2.5)
    block = calibration.calibrate(
        logits[:10_000], labels[:10_000], logits[10_000:], labels[10_000:]
    )
    assert block["applied"] is True
    assert block["validation_nll"]["after"] < block["validation_nll"]["before"]
    before, after = block["test"]["before"], block["test"]["after"]
    assert after["nll"] < before["nll"]
    assert after["ece"] < before["ece"] / 2
    assert after["brier"] < before["brier"]


def test_binary_logit_is_calibrated_through_the_sigmoid():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 4, (20_000, 1))
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-logits[:, 0] / 2.0))).astype(int)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_a_separable_validation_split_gets_no_temperature():
    """Every validation point right and far from the boundary: the NLL only falls as T -> 0;
    sharpening would make one wrong test answer ruinously confident."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 200)
    logits = ((labels * 2 - 1) * rng.uniform(4, 9, 200))[:, None]
    block = calibration.calibrate(logits, labels, logits, labels)
    assert block["applied"] is False
    assert block["temperature"] == 1.0
    assert "separates the validation split" in block["note"]
