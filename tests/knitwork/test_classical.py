"""The classical restorers of the quality bench: each beats the free answer (mean-colour fill,
the noisy input, nearest-neighbour enlargement), keeps what was observed, and handles grey
images; bm3d-sigma is told the true σ and refuses to run without it."""

from __future__ import annotations

import numpy as np
import pytest

from knitwork.classical import CLASSICAL, classical
from knitwork.degradation import Degradation
from knitwork.metrics import estimate_noise, psnr
from knitwork.tasks import naive_restoration
from tests.conftest import example_image


@pytest.mark.parametrize("method", [m.name for m in CLASSICAL["inpaint"]])
def test_inpainting_fills_the_hole_better_than_the_mean_colour(method):
    clean = example_image("butterfly", 64)
    obs = Degradation(task="inpaint", fill_ratio=0.04).apply(clean, 3)[0]
    restored = classical("inpaint", method).restore(obs)
    assert restored.shape == clean.shape and restored.dtype == np.float32
    assert np.array_equal(restored[obs.known], obs.image[obs.known])
    assert psnr(restored, clean, obs.hole) > psnr(naive_restoration(obs), clean, obs.hole) + 1


@pytest.mark.parametrize("method", [m.name for m in CLASSICAL["denoise"]])
def test_denoising_beats_the_noisy_input(method):
    clean = example_image("head", 64)
    obs = Degradation(task="denoise", sigma=25).apply(clean, 3)[0]
    restored = classical("denoise", method).run(obs, sigma=25 / 255)
    assert restored.shape == clean.shape and restored.min() >= 0 and restored.max() <= 1
    assert psnr(restored, clean) > psnr(obs.image, clean) + 3


def test_noise_level_is_estimated_not_given():
    clean = example_image("head", 64)
    for sigma in (10, 40):
        obs = Degradation(task="denoise", sigma=sigma).apply(clean, 1)[0]
        assert estimate_noise(obs.image) * 255 == pytest.approx(sigma, rel=0.3)


def test_bm3d_sigma_uses_the_sigma_it_is_told():
    import bm3d

    clean = example_image("head", 32)
    obs = Degradation(task="denoise", sigma=25).apply(clean, 2)[0]
    told = classical("denoise", "bm3d-sigma")
    expected = np.clip(bm3d.bm3d_rgb(obs.image.astype(np.float64), 25 / 255), 0, 1)
    assert np.allclose(told.run(obs, sigma=25 / 255), expected, atol=1e-5)  # BM3D: ±1e-7 noise
    assert np.abs(told.run(obs, sigma=50 / 255) - expected).mean() > 1 / 255
    with pytest.raises(ValueError, match="bm3d-sigma needs the true noise level"):
        told.run(obs)
    estimated = classical("denoise", "nlm")  # not told: the same result whatever σ is passed
    assert np.array_equal(estimated.run(obs, sigma=25 / 255), estimated.run(obs, sigma=1.0))


def test_bicubic_beats_nearest_neighbour():
    clean = example_image("butterfly", 64)
    obs = Degradation(task="sr", scale=2).apply(clean, 0)[0]
    restored = classical("sr", "bicubic").restore(obs)
    nearest = np.repeat(np.repeat(obs.image, 2, axis=0), 2, axis=1)
    assert restored.shape == clean.shape
    assert psnr(restored, clean) > psnr(nearest, clean) + 0.5


@pytest.mark.parametrize("task", ["inpaint", "denoise"])
def test_grey_images_work(task):
    grey = example_image("bird", 40).mean(axis=2, keepdims=True)
    obs = Degradation(task=task, fill_ratio=0.04, sigma=20).apply(grey, 0)[0]
    for method in CLASSICAL[task]:
        assert method.run(obs, sigma=20 / 255).shape == grey.shape, method.name


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="choose from biharmonic, telea, navier-stokes"):
        classical("inpaint", "photoshop")
