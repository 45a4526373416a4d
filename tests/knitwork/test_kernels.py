"""Super-resolution: degradation kernels, both downsamplers, and tiny SR fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from knitwork.config import as_baseline
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.kernels import (
    LearnedDownsampler,
    bicubic_upsample,
    degrade_sr,
    delta_kernel,
    downsample,
    gaussian_kernel,
    kernel_error,
    parse_kernel,
    random_kernel,
)
from knitwork.metrics import psnr
from knitwork.presets import get_preset
from knitwork.report import learned_kernel
from knitwork.tasks import crop_to_scale
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


def torch_bicubic(low: np.ndarray, scale: int) -> np.ndarray:
    """torch's bicubic (Keys a = −0.75) on our grid: HR pixel y samples LR position y / r."""
    h, w, _ = low.shape
    image = torch.from_numpy(np.ascontiguousarray(low)).permute(2, 0, 1).unsqueeze(0)
    gy = 2 * (torch.arange(h * scale) / scale) / max(h - 1, 1) - 1
    gx = 2 * (torch.arange(w * scale) / scale) / max(w - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0)
    up = torch.nn.functional.grid_sample(
        image, grid, mode="bicubic", padding_mode="border", align_corners=True
    )
    return up.squeeze(0).permute(1, 2, 0).clamp(0, 1).numpy()


def quadratic_ramp(height: int, width: int) -> np.ndarray:
    """a + b·x + c·x² along the columns, within [0.1, 0.9], three channels."""
    x = np.arange(width) / width
    row = 0.1 + 0.3 * x + 0.5 * x**2
    return np.tile(row[None, :, None], (height, 1, 3)).astype(np.float32)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_is_keys_half_and_reproduces_quadratics(scale):
    n = 12  # LR columns; HR column y has all 4 taps inside for r ≤ y < r·(n − 2)
    hr = quadratic_ramp(4 * scale, n * scale)
    low = hr[::scale, ::scale]
    inside = slice(scale, scale * (n - 2))
    ours = np.abs(bicubic_upsample(low, scale) - hr)[:, inside].max()
    torch_error = np.abs(torch_bicubic(low, scale) - hr)[:, inside].max()
    assert ours < 1e-5  # a = −0.5 is exact on quadratics
    assert torch_error > 1e-4 and torch_error > 100 * ours  # a = −0.75 is not


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_a_075_is_torch_bicubic_with_border_padding(scale):
    # same grid and edge replication as grid_sample(padding_mode="border"), borders included
    low = np.random.default_rng(2).random((7, 10, 3)).astype(np.float32)
    expected = torch_bicubic(low, scale)
    np.testing.assert_allclose(bicubic_upsample(low, scale, a=-0.75), expected, atol=1e-5)
    assert np.abs(bicubic_upsample(low, scale) - expected).max() > 1e-3


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_exact_on_linear_ramps_and_keeps_lr_pixels(scale):
    y, x = np.mgrid[0 : 6 * scale, 0 : 9 * scale] / (10 * scale)
    plane = (0.1 + 0.5 * x + 0.3 * y)[:, :, None].astype(np.float32)
    low = plane[::scale, ::scale]
    up = bicubic_upsample(low, scale)
    inside = (slice(scale, scale * 4), slice(scale, scale * 7))
    np.testing.assert_allclose(up[inside], plane[inside], atol=1e-6)
    noise = np.random.default_rng(3).random((5, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(bicubic_upsample(noise, scale)[::scale, ::scale], noise)


@pytest.mark.parametrize("shape", [(7, 11, 3), (5, 4, 1), (1, 9, 3), (13, 13, 1)])
def test_bicubic_shapes_for_odd_and_non_square_inputs(shape):
    low = np.random.default_rng(4).random(shape).astype(np.float32)
    up = bicubic_upsample(low, 3)
    assert up.shape == (3 * shape[0], 3 * shape[1], shape[2]) and up.dtype == np.float32
    assert up.min() >= 0 and up.max() <= 1


def test_known_kernel_fit_beats_nearest_neighbour():
    clean = example_image("head", 48)
    obs = Degradation(task="sr", scale=2, kernel="gaussian:1").apply(clean, 0)[0]
    np.testing.assert_array_equal(obs.kernel, gaussian_kernel(1.0))  # the fit knows it
    truth = crop_to_scale(clean, 2)
    nearest = np.repeat(np.repeat(obs.image, 2, axis=0), 2, axis=1)
    result = fit(obs, get_preset("fast-sr").with_steps(250), seed=0)
    assert result.image.shape == truth.shape
    assert psnr(result.image, truth) > psnr(nearest, truth) + 0.5


@pytest.mark.parametrize("baseline", [False, True])
def test_odd_non_square_images_round_trip(baseline):
    clean = example_image("bird", 48)[:27, :37]  # odd, non-square
    obs = Degradation(task="sr", scale=2).apply(clean, 0)[0]
    assert obs.image.shape == (13, 18, 3) and obs.output_shape == (26, 36)
    config = shrink(get_preset("fast-sr"), steps=2)
    result = fit(obs, as_baseline(config) if baseline else config, seed=0)
    assert result.image.shape == (26, 36, 3) and result.scale == 2
    assert (learned_kernel(result) is None) == baseline  # a blind kernel unless baseline


def test_kernel_error_is_zero_for_the_truth_and_positive_when_it_is_off():
    truth = gaussian_kernel(1.5, 0.8, theta=0.4)
    assert kernel_error(truth, truth) == pytest.approx(0, abs=1e-12)
    assert kernel_error(3 * truth, truth) == pytest.approx(0, abs=1e-12)  # scale is normalised
    whole = np.pad(truth, ((0, 2), (2, 0)))  # the same kernel, centred 1 px off each way
    assert kernel_error(whole, truth) == pytest.approx(0, abs=1e-12)
    half = ndimage.shift(truth.astype(np.float64), (0.5, 0), order=1)  # half a pixel off
    assert kernel_error(half, truth) > 0.01
    start = kernel_error(delta_kernel(), truth)
    wider = kernel_error(gaussian_kernel(1.0, 0.6, theta=0.4), truth)
    assert 0 < wider < start  # a nearer shape scores nearer


def test_random_kernels_are_seeded_centred_and_grow_with_the_factor():
    a, b = random_kernel(3, 2), random_kernel(3, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(random_kernel(4, 2), a)
    for seed in range(5):
        for scale in (2, 4):
            k = random_kernel(seed, scale)
            assert k.shape[0] % 2 == 1 and k.shape == k.shape[::-1]
            assert k.min() >= 0 and k.sum() == pytest.approx(1, abs=1e-5)
            centre = (np.array(k.shape) - 1) / 2
            np.testing.assert_allclose(ndimage.center_of_mass(k), centre, atol=0.02)

    def footprint(k):  # effective number of taps: 1 / Σk²
        return 1 / float((k**2).sum())

    narrow = np.mean([footprint(random_kernel(s, 2)) for s in range(8)])
    assert np.mean([footprint(random_kernel(s, 4)) for s in range(8)]) > narrow  # ×4: wider


def test_a_random_degradation_draws_one_kernel_per_image_seed():
    clean = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    known = Degradation(task="sr", scale=2, kernel="random")
    blind = Degradation(task="sr", scale=2, degrade_kernel="random")
    obs, _ = known.apply(clean, seed=7)
    np.testing.assert_array_equal(obs.kernel, random_kernel(7, 2))  # told the true kernel
    assert blind.apply(clean, seed=7)[0].kernel is None  # blind: learns it
    np.testing.assert_array_equal(blind.apply(clean, seed=7)[0].image, obs.image)
    assert not np.array_equal(blind.apply(clean, seed=8)[0].image, obs.image)
    np.testing.assert_array_equal(blind.true_kernel(7), random_kernel(7, 2))
    with pytest.raises(ValueError, match="random is drawn per image"):
        known.observe(obs.image)
