"""Deep Image Prior baseline: shapes, sizes, seeding, the size guard, and that it restores.

Fits use a shrunken network (16 channels, 3 levels) so that each takes about a second on one
CPU thread; one test runs DIP's published network itself for one step. Results are
deterministic for a seed and a thread count (not across thread counts).
"""

from __future__ import annotations

import dataclasses
import resource
import time

import numpy as np
import pytest
import torch

from knitwork.dip import (
    DEFAULT_MEMORY_BUDGET,
    DipConfig,
    canvas_size,
    check_memory,
    dip_config,
    fit_dip,
    parameter_count,
)
from knitwork.metrics import psnr
from knitwork.tasks import naive_restoration, observe


@pytest.fixture(autouse=True)
def one_thread():
    """These convolutions are tiny: on one thread they run ~10× faster than on the suite's two
    when the machine is busy (threads spin-waiting on each other); the setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(task: str, steps: int, **changes: object) -> DipConfig:
    """DIP's setting for ``task`` on a network small enough for a unit test."""
    return dataclasses.replace(dip_config(task, steps), channels=16, levels=3, **changes)


def smooth_image(height: int = 32, width: int = 32, channels: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    planes = [
        0.5 + 0.3 * np.sin(2 * np.pi * x),
        0.5 + 0.3 * np.cos(2 * np.pi * y),
        0.3 + 0.4 * x * y,
    ]
    return np.stack(planes[:channels], axis=-1).astype(np.float32)


def noisy_observation(clean: np.ndarray, sigma: float = 25.0, seed: int = 1):
    noise = np.random.default_rng(seed).normal(0, sigma / 255, clean.shape)
    return observe("denoise", np.clip(clean + noise, 0, 1).astype(np.float32))


def square_hole(height: int, width: int, top: int, left: int, side: int) -> np.ndarray:
    known = np.ones((height, width), dtype=bool)
    known[top : top + side, left : left + side] = False
    return known


def test_presets_are_dips_published_settings():
    inpaint, denoise = dip_config("inpaint"), dip_config("denoise")
    assert (denoise.channels, denoise.levels, denoise.skip_channels) == (128, 5, 4)
    assert (denoise.input_kind, denoise.input_channels, denoise.input_scale) == ("noise", 32, 0.1)
    assert (denoise.lr, denoise.steps, denoise.ema, denoise.upsample) == (
        0.01,
        3000,
        0.99,
        "bilinear",
    )
    assert denoise.reg_noise == pytest.approx(1 / 30)
    assert (inpaint.skip_channels, inpaint.input_kind, inpaint.upsample) == (
        0,
        "meshgrid",
        "nearest",
    )
    assert (inpaint.lr, inpaint.steps, inpaint.reg_noise, inpaint.ema) == (0.01, 5000, 0.03, 0.0)
    assert dip_config("denoise", steps=1800).steps == 1800
    # about 2.2 M parameters (the paper's table says 2,400K for DIP)
    assert 2_100_000 < parameter_count(denoise, 3) < 2_400_000
    assert 2_100_000 < parameter_count(inpaint, 3) < 2_400_000
    with pytest.raises(ValueError, match="inpaint or denoise"):
        dip_config("sr")


def test_published_network_runs_on_a_tiny_image():
    clean = smooth_image(20, 24)
    result = fit_dip(noisy_observation(clean), dip_config("denoise", steps=1), seed=0)
    assert result.image.shape == (20, 24, 3) and result.steps == 1
    assert result.parameters == parameter_count(dip_config("denoise"), 3)
    assert result.params.startswith("DIP 5×128 skip 4, noise 32 in, bilinear, 1 step, lr 0.01")


@pytest.mark.parametrize("task", ["inpaint", "denoise"])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_dtype_and_range_at_odd_sizes(task, channels):
    clean = smooth_image(21, 30, channels)
    known = square_hole(21, 30, 8, 10, 5) if task == "inpaint" else None
    result = fit_dip(observe(task, clean, known), small(task, 5), seed=0)
    for image in (result.image, result.raw):
        assert image.shape == (21, 30, channels) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert result.seconds > 0 and result.parameters > 0 and result.config.steps == 5


def test_canvas_is_a_multiple_of_the_levels_and_deep_enough():
    assert canvas_size(21, 30, 3) == (24, 32)
    assert canvas_size(21, 30, 5) == (64, 64)
    assert canvas_size(512, 100, 5) == (512, 128)


def test_inpainting_keeps_known_pixels_in_image_only():
    clean = smooth_image()
    known = square_hole(32, 32, 12, 10, 6)
    result = fit_dip(observe("inpaint", clean, known), small("inpaint", 10), seed=0)
    assert np.array_equal(result.image[known], clean[known])
    assert not np.array_equal(result.raw[known], clean[known])
    assert np.array_equal(result.image[~known], result.raw[~known])


def test_values_inside_the_hole_are_ignored():
    clean = smooth_image(16, 16)
    known = square_hole(16, 16, 5, 5, 4)
    garbage = clean.copy()
    garbage[~known] = np.nan
    config = small("inpaint", 5)
    expected = fit_dip(observe("inpaint", clean, known), config, seed=0)
    result = fit_dip(observe("inpaint", garbage, known), config, seed=0)
    assert np.array_equal(result.raw, expected.raw) and np.isfinite(result.image).all()


def test_seeded_and_leaves_global_state_alone():
    obs = noisy_observation(smooth_image(16, 16))
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    first = fit_dip(obs, small("denoise", 5), seed=3)
    again = fit_dip(obs, small("denoise", 5), seed=3)
    other = fit_dip(obs, small("denoise", 5), seed=4)
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)
    assert torch.equal(torch.random.get_rng_state(), rng) and torch.get_num_threads() == threads


def test_denoising_beats_the_noisy_input():
    # measured (one thread): +8.3 dB at 200 steps for seed 0, +7.8 to +8.7 over seeds 0-3
    clean = smooth_image()
    obs = noisy_observation(clean)
    result = fit_dip(obs, small("denoise", 200), seed=0)
    assert psnr(result.image, clean) > psnr(obs.image, clean) + 6.0


def test_inpainting_fills_a_small_hole():
    # measured: hole PSNR 39 dB at 100 steps (seeds 0, 2; 32 dB for seed 1) against 14 dB for the
    # mean known colour and 7 dB for zeros
    clean = smooth_image()
    known = square_hole(32, 32, 12, 10, 6)
    obs = observe("inpaint", clean, known)
    result = fit_dip(obs, small("inpaint", 100), seed=0)
    zeros = np.where(known[:, :, None], clean, 0)
    hole = ~known
    assert psnr(result.image, clean, hole) > psnr(zeros, clean, hole) + 20
    assert psnr(result.image, clean, hole) > psnr(naive_restoration(obs), clean, hole) + 10


def test_backtracking_undoes_steps_that_wreck_the_fit():
    # lr 3 blows the fit up: measured 50 of 100 steps undone, PSNR 12.8 dB against 6.2 without
    obs = noisy_observation(smooth_image())
    config = small("denoise", 100, lr=3.0, ema=0.0)
    kept = fit_dip(obs, config, seed=0)
    wrecked = fit_dip(obs, dataclasses.replace(config, backtrack_db=0.0), seed=0)
    assert kept.backtracks > 0 and wrecked.backtracks == 0
    assert psnr(kept.image, obs.image) > psnr(wrecked.image, obs.image) + 3


def test_progress_reports_loss_and_psnr():
    clean = smooth_image(16, 16)
    seen: list[tuple[int, dict[str, float]]] = []
    fit_dip(
        noisy_observation(clean),
        small("denoise", 7),
        seed=0,
        progress=lambda step, metrics: seen.append((step, metrics)),
        ground_truth=clean,
        log_every=3,
    )
    assert [step for step, _ in seen] == [3, 6, 7]
    assert all({"total", "psnr"} <= set(metrics) for _, metrics in seen)


def test_size_guard_refuses_a_12_megapixel_photo_fast():
    # broadcast views: the "photo" itself takes no memory either
    image = np.broadcast_to(np.float32(0.5), (3000, 4000, 3))
    known = np.broadcast_to(True, (3000, 4000))
    obs = observe("denoise", image, known)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"4000×3000 image .* GiB .*downscale it to about"):
        fit_dip(obs, dip_config("denoise"), seed=0)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB
    check_memory(512, 512, dip_config("denoise"), DEFAULT_MEMORY_BUDGET)  # the paper's sizes pass
    with pytest.raises(ValueError, match="raise memory_budget"):
        check_memory(512, 512, dip_config("denoise"), 2**30)


def test_super_resolution_is_refused():
    obs = observe("sr", smooth_image(8, 8), scale=2)
    with pytest.raises(ValueError, match="inpaint or denoise"):
        fit_dip(obs, dip_config("denoise", 1))
