"""Super-resolution: degradation kernels, both downsamplers, and tiny SR fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from knitwork.config import as_baseline
from knitwork.fit import fit
from knitwork.kernels import (
    LearnedDownsampler,
    bicubic_upsample,
    degrade_sr,
    downsample,
    gaussian_kernel,
    parse_kernel,
)
from knitwork.metrics import psnr
from knitwork.presets import get_preset
from knitwork.tasks import crop_to_scale, degrade
from tests.conftest import example_image, shrink


def reference_downsample(hr: np.ndarray, kernel: np.ndarray, scale: int) -> np.ndarray:
    """scipy's correlation with whole-sample reflection, then every r-th pixel."""
    channels = [ndimage.correlate(hr[:, :, c], kernel, mode="mirror") for c in range(hr.shape[2])]
    return np.stack(channels, axis=2)[::scale, ::scale]


@pytest.mark.parametrize(
    "kernel",
    [
        np.ones((1, 1), np.float32),
        gaussian_kernel(1.2),
        gaussian_kernel(2.0, 0.8, math.radians(30)),
    ],
)
@pytest.mark.parametrize("scale", [2, 3])
def test_downsampling_matches_scipy(kernel, scale):
    hr = np.random.default_rng(0).random((27, 33, 3)).astype(np.float32)
    cropped, lr = degrade_sr(hr, scale, kernel)
    assert cropped.shape == (27 // scale * scale, 33 // scale * scale, 3)
    expected = np.clip(reference_downsample(cropped, kernel, scale), 0, 1)
    np.testing.assert_allclose(lr, expected, atol=1e-5)


def test_delta_is_plain_subsampling():
    hr = np.random.default_rng(1).random((8, 12, 1)).astype(np.float32)
    _, lr = degrade_sr(hr, 4, parse_kernel("delta"))
    np.testing.assert_array_equal(lr, hr[::4, ::4])


def test_gaussian_kernels_are_normalised_and_rotated():
    round_k, diag = parse_kernel("gaussian:1.5"), parse_kernel("gaussian:3,1,45")
    assert round_k.sum() == pytest.approx(1) and np.allclose(round_k, round_k.T)
    assert diag.sum() == pytest.approx(1)
    c = diag.shape[0] // 2
    assert diag[c + 2, c + 2] > diag[c + 2, c - 2]  # elongated along the diagonal


@pytest.mark.parametrize("spec", ["gaussian:", "gaussian:1,2", "box", "gaussian:-1"])
def test_bad_kernel_specs_say_what_is_expected(spec):
    with pytest.raises(ValueError, match=r"kernel|sigma"):
        parse_kernel(spec)


def test_kernel_file(tmp_path):
    np.save(tmp_path / "k.npy", np.ones((3, 3)))
    np.testing.assert_allclose(parse_kernel(str(tmp_path / "k.npy")), np.full((3, 3), 1 / 9))
    np.save(tmp_path / "even.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"even\.npy: a kernel must be"):
        parse_kernel(str(tmp_path / "even.npy"))


def test_learned_kernel_is_the_exact_composition_of_the_stack():
    torch.manual_seed(0)
    stack = LearnedDownsampler((7, 5, 3, 1, 1, 1), width=8, scale=2)
    with torch.no_grad():
        for layer in stack.layers:  # move far from the delta start
            layer.weight.normal_(0, 0.3)
    kernel = stack.kernel()
    assert kernel.shape == (13, 13)  # 7 + 5 + 3 − 2: the authors' code keeps only 11×11
    impulse = torch.zeros(1, 13, 13)
    impulse[0, 6, 6] = 1.0
    x = impulse.unsqueeze(1)
    for layer in stack.layers:  # the stack, stride 1, on an impulse: the flipped kernel
        x = torch.nn.functional.conv2d(x, layer.weight, padding=layer.weight.shape[-1] // 2)
    torch.testing.assert_close(x[0, 0], kernel.flip(0, 1), atol=1e-5, rtol=1e-4)
    image = torch.rand(3, 30, 22)
    torch.testing.assert_close(stack(image), downsample(image, kernel, 2), atol=1e-5, rtol=1e-4)


def test_learned_stack_starts_as_plain_subsampling():
    stack = LearnedDownsampler((7, 5, 3, 1, 1, 1), width=64, scale=2)
    kernel = stack.kernel().detach()
    assert kernel[6, 6] == pytest.approx(1.0, abs=0.05) and kernel.sum() == pytest.approx(1, 0.1)


def test_bicubic_is_aligned_with_the_sampling_grid():
    ramp = np.tile(np.arange(16, dtype=np.float32)[None, :, None] / 16, (8, 1, 1))
    up = bicubic_upsample(ramp[::2, ::2], 2)
    assert up.shape == ramp.shape
    # bicubic is exact on a ramp wherever its 4 neighbours lie inside the image
    np.testing.assert_allclose(up[:, 2:12], ramp[:, 2:12], atol=1e-5)


def test_known_kernel_fit_beats_nearest_neighbour():
    clean = example_image("head", 48)
    kernel = gaussian_kernel(1.0)
    obs = degrade("sr", clean, seed=0, scale=2, kernel=kernel, blind=False)
    truth = crop_to_scale(clean, 2)
    nearest = np.repeat(np.repeat(obs.image, 2, axis=0), 2, axis=1)
    result = fit(obs, get_preset("fast-sr").with_steps(250), seed=0)
    assert result.image.shape == truth.shape
    assert psnr(result.image, truth) > psnr(nearest, truth) + 0.5


@pytest.mark.parametrize("baseline", [False, True])
def test_odd_non_square_images_round_trip(baseline):
    clean = example_image("bird", 48)[:27, :37]  # odd, non-square
    obs = degrade("sr", clean, seed=0, scale=2)
    assert obs.image.shape == (13, 18, 3) and obs.output_shape == (26, 36)
    config = shrink(get_preset("fast-sr"), steps=2)
    result = fit(obs, as_baseline(config) if baseline else config, seed=0)
    assert result.image.shape == (26, 36, 3) and result.scale == 2
    assert (result.model.downsampler is None) == baseline  # learned kernel unless baseline
