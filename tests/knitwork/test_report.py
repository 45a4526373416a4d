"""What a fit reports: the learned kernel's error against the true one (``kernel_scores``)."""

from __future__ import annotations

import numpy as np
import pytest

from knitwork.kernels import delta_kernel, gaussian_kernel, kernel_error, random_kernel
from knitwork.report import kernel_scores


def test_a_learned_kernel_equal_to_the_truth_scores_zero_and_the_start_does_not():
    truth = random_kernel(seed=7, scale=2)
    scores = kernel_scores(truth.copy(), truth)
    assert scores["kernel_error"] == pytest.approx(0.0, abs=1e-12)
    assert scores["kernel_error_start"] == pytest.approx(kernel_error(delta_kernel(), truth))
    assert scores["kernel_error_start"] > 0.1


def test_a_wrong_kernel_scores_between_the_truth_and_beyond():
    truth = gaussian_kernel(1.5, 0.6, np.pi / 4)
    scores = kernel_scores(gaussian_kernel(1.0), truth)
    assert isinstance(scores["kernel_error"], float) and scores["kernel_error"] > 0
    assert np.isfinite(scores["kernel_error_start"]) and scores["kernel_error_start"] >= 0


@pytest.mark.parametrize("learned, truth", [(None, delta_kernel()), (delta_kernel(), None)])
def test_no_learned_or_no_true_kernel_scores_none(learned, truth):
    assert kernel_scores(learned, truth) == {"kernel_error": None, "kernel_error_start": None}
