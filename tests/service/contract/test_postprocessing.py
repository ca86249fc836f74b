"""service.contract.postprocessing: stable softmax/sigmoid, labels, top-k."""

import math

import numpy as np
import pytest

from service.contract.postprocessing import (
    predicted_indices,
    probabilities,
    sigmoid,
    softmax,
    top_k,
)


def test_softmax_known_values():
    p = softmax(np.array([[1.0, 2.0, 3.0]]))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-12)


def test_softmax_is_stable_for_huge_logits():
    p = softmax(np.array([[1000.0, 1001.0], [-1000.0, -1000.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0], [1 / (1 + math.e), math.e / (1 + math.e)])
    np.testing.assert_allclose(p[1], [0.5, 0.5])


def test_sigmoid_is_stable_both_ways():
    s = sigmoid(np.array([-800.0, 0.0, 800.0, 2.0]))
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0, 1 / (1 + math.exp(-2))], atol=1e-300)


def test_sigmoid_matches_the_logistic_function_across_float64s_range():
    z = np.linspace(-700.0, 700.0, 2801)
    exact = [1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v)) for v in z]
    np.testing.assert_allclose(sigmoid(z), exact, rtol=1e-12, atol=0)


def test_probabilities_rows_sum_to_one():
    rng = np.random.default_rng(0)
    for width in (1, 4, 10):
        p = probabilities(rng.normal(scale=20, size=(50, width)))
        assert p.shape == (50, max(width, 2))
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


def test_single_binary_logit_gives_two_columns():
    p = probabilities(np.array([[0.0], [math.log(3)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])


def test_probabilities_reject_wrong_rank():
    with pytest.raises(ValueError, match="2-D"):
        probabilities(np.zeros(3))


def test_predicted_indices_binary_threshold_and_argmax():
    assert predicted_indices(np.array([[-0.1], [0.1]])).tolist() == [0, 1]
    assert predicted_indices(np.array([[0.0, 5.0, 1.0], [9.0, 5.0, 1.0]])).tolist() == [1, 0]


def test_top_k_orders_best_first():
    probs = np.array([[0.1, 0.6, 0.3]])
    assert top_k(probs, ["a", "b", "c"], 2) == [[("b", 0.6), ("c", 0.3)]]


def test_output_spec_temperature_softens_but_keeps_the_winner():
    from service.contract.postprocessing import OutputSpec

    logits = np.array([[2.0, 0.0, -1.0], [0.5, 3.0, 1.0]])
    plain, warm = OutputSpec(), OutputSpec("logits", 2.0)
    np.testing.assert_allclose(warm.probabilities(logits), softmax(logits / 2.0))
    assert warm.probabilities(logits).max() < plain.probabilities(logits).max()
    np.testing.assert_array_equal(warm.indices(logits), plain.indices(logits))
    np.testing.assert_allclose(
        OutputSpec("logits", 4.0).probabilities(np.array([[2.0]]))[0, 1], 1 / (1 + np.exp(-0.5))
    )


def test_output_spec_passes_probabilities_through_never_a_second_softmax():
    from service.contract.postprocessing import OutputSpec

    spec = OutputSpec("probabilities")
    assert not spec.has_logits
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(spec.probabilities(probs), probs, rtol=1e-6)
    np.testing.assert_array_equal(spec.indices(probs), [0, 2])
    one = np.array([[0.25], [0.75]], dtype=np.float32)
    np.testing.assert_allclose(spec.probabilities(one), [[0.75, 0.25], [0.25, 0.75]])
    np.testing.assert_array_equal(spec.indices(one), [0, 1])
