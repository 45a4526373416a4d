"""Seeded degradations and the metric protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from knitwork.degradation import Degradation, add_noise, rectangular_hole
from knitwork.metrics import evaluate, psnr, ssim
from knitwork.tasks import naive_restoration, observe


def test_hole_is_seeded_square_inside_and_of_the_right_area():
    known, (top, left, h, w) = rectangular_hole(100, 80, 0.04, seed=3)
    again, _ = rectangular_hole(100, 80, 0.04, seed=3)
    other, _ = rectangular_hole(100, 80, 0.04, seed=4)
    np.testing.assert_array_equal(known, again)
    assert not np.array_equal(known, other)
    assert h == w == 18 and (~known).sum() == 18 * 18  # round(sqrt(0.04·8000)) = 18
    assert top >= 1 and left >= 1 and top + h < 100 and left + w < 80


def test_noise_is_seeded_with_sigma_on_the_255_scale():
    clean = np.full((64, 64, 3), 0.5, np.float32)
    noisy = add_noise(clean, 20, seed=1)
    np.testing.assert_array_equal(noisy, add_noise(clean, 20, seed=1))
    assert (noisy - clean).std() * 255 == pytest.approx(20, rel=0.05)


def test_degraded_inpainting_input_hides_the_hole(tiny):
    obs = Degradation(task="inpaint", fill_ratio=0.05).apply(tiny, 0)[0]
    assert obs.image[obs.hole].max() == 0 and obs.known.sum() < tiny.shape[0] * tiny.shape[1]
    filled = naive_restoration(obs)
    np.testing.assert_allclose(filled[obs.hole][0], tiny[obs.known].mean(axis=0), rtol=1e-5)


def test_degradation_is_one_function_of_image_and_seed(tiny):
    for degradation in (
        Degradation(task="inpaint", fill_ratio=0.05),
        Degradation(task="denoise", sigma=30),
        Degradation(task="sr", scale=2, degrade_kernel="gaussian:1"),
    ):
        obs, truth = degradation.apply(tiny, 7)
        again, _ = degradation.apply(tiny, 7)
        other, _ = degradation.apply(tiny, 8)
        np.testing.assert_array_equal(obs.image, again.image)
        same_seed_free = degradation.task == "sr"  # a kernel blur has no randomness
        assert np.array_equal(obs.image, other.image) == same_seed_free
        assert truth.shape[:2] == obs.output_shape


def test_degradation_refuses_bad_values_when_built():
    with pytest.raises(ValueError, match="fill-ratio"):
        Degradation(task="inpaint", fill_ratio=1.5)
    with pytest.raises(ValueError, match="scale"):
        Degradation(task="sr", scale=1)
    with pytest.raises(ValueError, match="kernel 'gauss'"):
        Degradation(task="sr", kernel="gauss")
    with pytest.raises(ValueError, match="task must be one of"):
        Degradation(task="deblur")


def test_observation_errors():
    with pytest.raises(ValueError, match="no known pixel"):
        observe("inpaint", np.zeros((4, 4, 3)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match=r"mask is 5×4 but the image is 4×4"):
        observe("inpaint", np.zeros((4, 4, 3)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="task must be one of"):
        observe("deblur", np.zeros((4, 4, 3)))


def test_metrics_protocol(tiny):
    rng = np.random.default_rng(0)
    noisy = np.clip(tiny + rng.normal(0, 0.05, tiny.shape), 0, 1)
    hole = np.zeros(tiny.shape[:2], bool)
    hole[10:20, 5:15] = True
    m = evaluate(noisy, tiny, hole)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(tiny, noisy, data_range=1.0))
    mse = np.mean((noisy[hole] - tiny[hole]) ** 2)
    assert m["psnr_hole"] == pytest.approx(10 * math.log10(1 / mse))
    assert 0 < m["ssim"] < 1 and 0 < m["ssim_hole"] < 1
    assert ssim(tiny, tiny) == pytest.approx(1.0) and psnr(tiny, tiny) == math.inf
    assert evaluate(noisy, tiny)["psnr_hole"] is None
