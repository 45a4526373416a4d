"""Blind super-resolution's kernel, estimated from the low-resolution image's power spectrum
before the image fit (``model.blind_kernel = "estimate"``).

The model: the LR image is a natural image blurred by an anisotropic Gaussian kernel k
(covariance Σ, in HR pixels) and subsampled by r. Natural images have power spectra that fall
off as a power of the frequency, |f|^−α, with a strength that may depend on the direction (a
beach's horizon, a facade's verticals) but not on the frequency; the blur multiplies the
spectrum by |K(f)|² = exp(−4π² fᵀΣf), which grows with the frequency. So, for the LR
frequencies f (in LR cycles per pixel; f / r in HR units) of a band clear of the DC term and
of the aliasing near Nyquist,

    log P(f) ≈ c − α log|f| + Σₙ (aₙ cos 2nφ + bₙ sin 2nφ) − 4π² (f/r)ᵀ Σ (f/r)

is linear in (c, α, aₙ, bₙ, Σ's three entries): one least-squares solve. The angular terms
soak up the content's own anisotropy so that only the frequency-dependent part is read as
blur. Σ's eigenvalues are clipped to a plausible range and the kernel drawn from them.

Chosen on the tuning images only (the ten of ../shared/datasets/tuning, 256 px, ×2 and ×4,
round, diagonal and random kernels: docs/benchmarks/sr-kernels.md): two harmonics (one or three
score the same); the band 0.05–0.45, of ten bands tried between 0.03 and 0.6 the one with no
image worse than half the delta start's error and the lowest median errors.
"""

from __future__ import annotations

import math

import numpy as np

from knitwork.config import Config
from knitwork.kernels import gaussian_kernel
from knitwork.tasks import Observation

BAND = (0.05, 0.45)  # LR cycles per pixel: above the window's DC leak, short of the corners
HARMONICS = 2  # angular terms cos 2nφ, sin 2nφ for n = 1 … this: the content's anisotropy
SIGMA_RANGE = (0.2, 2.0)  # per unit of the factor for the upper end: σ in [0.2, 2·r] HR px
MIN_SIDE = 8  # LR pixels: below this the spectrum has too few frequencies to fit


def kernel_for(observation: Observation, config: Config) -> np.ndarray | None:
    """The kernel a blind Knitwork SR fit with ``model.blind_kernel = "estimate"`` uses as
    its known kernel; None for every other fit (which keeps its own kernel, or learns one)."""
    if (
        observation.task != "sr"
        or observation.kernel is not None
        or config.model.method != "knitwork"
        or config.model.blind_kernel != "estimate"
    ):
        return None
    return estimate_kernel(observation.image, observation.scale)


def estimate_kernel(low: np.ndarray, scale: int) -> np.ndarray:
    """The Gaussian kernel (HR pixels, odd sides, sum 1) that best explains the power spectrum
    of ``low`` ((H, W, C) or (H, W), values in [0, 1]) as a natural image blurred and then
    subsampled by ``scale``. A flat or tiny image gives the near-delta end of the range."""
    sigmas, theta = estimate_gaussian(low, scale)
    return gaussian_kernel(sigmas[0], sigmas[1], theta)


def estimate_gaussian(low: np.ndarray, scale: int) -> tuple[tuple[float, float], float]:
    """((σ along the main axis, σ across it) in HR pixels, the main axis's angle in radians)."""
    gray = np.asarray(low, np.float64)
    gray = gray.mean(axis=2) if gray.ndim == 3 else gray
    lowest, highest = SIGMA_RANGE[0], SIGMA_RANGE[1] * scale
    h, w = gray.shape
    if min(h, w) < MIN_SIDE or float(gray.std()) == 0.0:
        return (lowest, lowest), 0.0
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((gray - gray.mean()) * window)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    radius = np.hypot(fx, fy)
    band = (radius > BAND[0]) & (radius < BAND[1]) & (power > 0)
    if band.sum() < 16:
        return (lowest, lowest), 0.0
    ux, uy, phi = fx[band] / scale, fy[band] / scale, np.arctan2(fy[band], fx[band])
    blur = -4 * math.pi**2
    columns = [np.ones_like(ux), -np.log(radius[band])]
    columns += [blur * ux * ux, blur * uy * uy, blur * 2 * ux * uy]
    for n in range(1, HARMONICS + 1):
        columns += [np.cos(2 * n * phi), np.sin(2 * n * phi)]
    coef, *_ = np.linalg.lstsq(np.stack(columns, 1), np.log(power[band]), rcond=None)
    cov = np.array([[coef[2], coef[4]], [coef[4], coef[3]]])
    values, vectors = np.linalg.eigh(cov)  # ascending
    values = np.clip(values, lowest**2, highest**2)
    theta = math.atan2(vectors[1, 1], vectors[0, 1])  # the larger eigenvalue's axis (x, y)
    return (math.sqrt(values[1]), math.sqrt(values[0])), theta
