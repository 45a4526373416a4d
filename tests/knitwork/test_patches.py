"""The patch sampler against a naive per-pixel reference, borders included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knitwork.config import PatchConfig
from knitwork.patches import gaussian_taps, in_image, masked_blur, patch_stack


def naive_stack(image: np.ndarray, known: np.ndarray, size: int, scales) -> tuple:
    """Per pixel, per scale, per element: a plain loop over (C, H, W) with no blur."""
    c, h, w = image.shape
    m = size // 2
    values = np.zeros((h * w, c, len(scales), size, size), dtype=np.float32)
    flags = np.zeros((h * w, len(scales), size, size), dtype=bool)
    for y in range(h):
        for x in range(w):
            for si, s in enumerate(scales):
                for ky in range(size):
                    for kx in range(size):
                        yy, xx = y + (ky - m) * s, x + (kx - m) * s
                        if 0 <= yy < h and 0 <= xx < w and known[yy, xx]:
                            values[y * w + x, :, si, ky, kx] = image[:, yy, xx]
                            flags[y * w + x, si, ky, kx] = True
    return values, flags


def naive_masked_blur(image: np.ndarray, known: np.ndarray, scale: int):
    """Gaussian blur renormalised over known in-image pixels, by explicit loops."""
    taps = gaussian_taps(scale).numpy().astype(np.float64)
    r = len(taps) // 2
    c, h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    full = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            num, den = np.zeros(c), 0.0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and known[yy, xx]:
                        wt = taps[dy + r] * taps[dx + r]
                        num += wt * image[:, yy, xx]
                        den += wt
            full[y, x] = known[y, x]
            out[:, y, x] = num / den if known[y, x] else 0.0
    return out, full


@pytest.mark.parametrize("size,scales,hw", [(3, (1, 2, 3), (7, 9)), (5, (1, 4), (11, 5))])
def test_patch_stack_matches_naive_reference(size, scales, hw):
    rng = np.random.default_rng(0)
    h, w = hw
    image = rng.random((2, h, w), dtype=np.float32)
    known = rng.random((h, w)) > 0.3
    cfg = PatchConfig(size=size, scales=scales, blur=False)
    values, flags = patch_stack(torch.from_numpy(image), torch.from_numpy(known), cfg)
    ref_values, ref_flags = naive_stack(image, known, size, scales)
    assert values.shape == (h * w, 2, len(scales), size, size)
    np.testing.assert_array_equal(flags.numpy(), ref_flags)
    np.testing.assert_allclose(values.numpy(), ref_values, atol=0)


def test_in_image_flags_match_naive_reference():
    cfg = PatchConfig(size=3, scales=(1, 2, 3), blur=False)
    _, ref_flags = naive_stack(np.ones((1, 7, 9), np.float32), np.ones((7, 9), bool), 3, (1, 2, 3))
    np.testing.assert_array_equal(in_image(7, 9, cfg).numpy(), ref_flags)


@pytest.mark.parametrize("scale", [2, 3])
def test_masked_blur_matches_naive_reference(scale):
    rng = np.random.default_rng(1)
    image = rng.random((3, 9, 7), dtype=np.float32)
    known = np.ones((9, 7), bool)
    known[3:5, 2:4] = False
    blurred, full = masked_blur(torch.from_numpy(image), torch.from_numpy(known), scale)
    ref, ref_full = naive_masked_blur(image, known, scale)
    np.testing.assert_array_equal(full.numpy(), ref_full)
    np.testing.assert_allclose(blurred.numpy(), ref, atol=1e-5)


def test_blurred_stack_is_the_blurred_image_sampled_with_dilation():
    rng = np.random.default_rng(2)
    image = rng.random((1, 9, 11), dtype=np.float32)
    known = np.ones((9, 11), bool)
    cfg = PatchConfig(size=3, scales=(1, 2), blur=True)
    values, flags = patch_stack(torch.from_numpy(image), torch.from_numpy(known), cfg)
    blurred, _ = naive_masked_blur(image, known, 2)
    ref_values, ref_flags = naive_stack(blurred.astype(np.float32), known, 3, (2,))
    np.testing.assert_allclose(values[:, :, 1:].numpy(), ref_values, atol=1e-5)
    np.testing.assert_array_equal(flags[:, 1:].numpy(), ref_flags)
