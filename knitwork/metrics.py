"""PSNR and SSIM, on the whole image and on the hole, from scikit-image.

Protocol (docs/metrics.md): images as float in [0, 1] (data range 1.0), all channels (RGB, not
the Y channel), no border crop. SSIM is scikit-image's default: 7×7 uniform window, K1 0.01,
K2 0.03, mean over channels. Hole SSIM is the mean of the whole image's SSIM map over hole pixels;
hole PSNR is computed from the mean squared error over hole pixels and channels.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image[:, :, None] if image.ndim == 2 else image


def psnr(restored: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB (data range 1.0), over ``region`` (H, W bool) when given; inf if identical."""
    restored, truth = _as_hwc(restored), _as_hwc(truth)
    if region is None:
        with np.errstate(divide="ignore"):  # identical images: inf, not a warning
            return float(peak_signal_noise_ratio(truth, restored, data_range=1.0))
    mse = float(np.mean((restored[region] - truth[region]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(restored: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """SSIM over the whole image, or its SSIM map averaged over ``region``."""
    restored, truth = _as_hwc(restored), _as_hwc(truth)
    value, ssim_map = structural_similarity(
        truth, restored, data_range=1.0, channel_axis=-1, full=True
    )
    return float(value if region is None else ssim_map[region].mean())


def evaluate(
    restored: np.ndarray, truth: np.ndarray, hole: np.ndarray | None = None
) -> dict[str, float | None]:
    """``psnr``, ``ssim`` on the whole image; ``psnr_hole``, ``ssim_hole`` (None without a hole)."""
    has_hole = hole is not None and bool(hole.any())
    return {
        "psnr": psnr(restored, truth),
        "ssim": ssim(restored, truth),
        "psnr_hole": psnr(restored, truth, hole) if has_hole else None,
        "ssim_hole": ssim(restored, truth, hole) if has_hole else None,
    }


def estimate_noise(image: np.ndarray) -> float:
    """The std of white noise in ``image`` (0–1 scale), by wavelet MAD (scikit-image)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(_as_hwc(image), channel_axis=-1, average_sigmas=True))
