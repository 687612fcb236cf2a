"""cnnserve.postprocess: the top-k arithmetic the server's Classify and the client's --local mode share."""

from __future__ import annotations

import numpy as np

from cnnserve.postprocess import DEFAULT_TOP_K, default_top_k, softmax, top_k


def test_top_k_ranks_by_logit_best_first_with_ties_in_class_order() -> None:
    logits = np.array([[1.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 5.0]], dtype=np.float32)
    indices, probabilities = top_k(logits, 3)
    assert indices.tolist() == [[1, 2, 0], [3, 0, 1]]
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(probabilities[0], expected[[1, 2, 0]], rtol=1e-6)
    assert probabilities.shape == (2, 3) and probabilities.dtype == np.float32


def test_far_behind_classes_keep_their_logit_order_when_probabilities_underflow() -> None:
    logits = np.array([[0.0, -200.0, -100.0, 300.0]], dtype=np.float32)
    indices, probabilities = top_k(logits, 4)
    assert indices.tolist() == [[3, 0, 2, 1]]  # the last three all have probability 0.0 in float32
    assert probabilities[0, 0] == 1.0 and probabilities[0, 1:].tolist() == [0.0, 0.0, 0.0]


def test_softmax_rows_sum_to_one_without_overflow() -> None:
    logits = np.array([[1000.0, 999.0], [-1000.0, -1000.0]], dtype=np.float32)
    probabilities = softmax(logits)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], rtol=1e-6)


def test_the_default_k_is_five_or_every_class_of_a_smaller_model() -> None:
    assert DEFAULT_TOP_K == 5
    assert default_top_k(1000) == 5 and default_top_k(3) == 3
