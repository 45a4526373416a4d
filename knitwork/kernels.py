"""Downsampling for super-resolution: degradation kernels, the known-kernel downsampler and a
learned one (a deep linear convolution stack in the spirit of KernelGAN).

Convention, shared by the degradation and both downsamplers: LR = (HR ⋆ k)[::r, ::r], the
correlation of HR with a centred odd-sized kernel k under whole-sample reflection at the
borders ("mirror"), then every r-th pixel from the top-left one. So LR pixel (i, j) sits on HR
pixel (r·i, r·j), and its coordinate is that pixel's centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def delta_kernel() -> np.ndarray:
    """Plain subsampling."""
    return np.ones((1, 1), dtype=np.float32)


def gaussian_kernel(sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """A normalised Gaussian; anisotropic (σx, σy) and rotated by ``theta`` radians if given.
    Size: the smallest odd side covering ±3σ of the wider axis."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"Gaussian kernel sigmas must be > 0; got {sigma_x}, {sigma_y}")
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


RANDOM_VARIANCE = (0.175, 2.5)  # per unit of the factor: the DIV2KRK generator's range
RANDOM_NOISE = 0.25  # multiplicative noise of each tap, at most ± this (KernelGAN's paper)


def random_kernel(seed: int, scale: int) -> np.ndarray:
    """A seeded random anisotropic Gaussian as the DIV2KRK protocol draws them: covariance
    eigenvalues uniform in [0.175, 2.5] × the factor, a uniform angle, each tap multiplied by
    1 + U(−0.25, 0.25); re-centred (its centre of mass on the centre tap, the convention
    of this module) and normalised. Size: the smallest odd side covering ±3σ of its wider
    axis."""
    rng = np.random.default_rng(seed)
    low, high = (v * scale for v in RANDOM_VARIANCE)
    variances = rng.uniform(low, high, size=2)
    theta = rng.uniform(0, math.pi)
    k = gaussian_kernel(*np.sqrt(variances), theta=theta).astype(np.float64)
    k *= 1 + rng.uniform(-RANDOM_NOISE, RANDOM_NOISE, size=k.shape)
    return _centred(k / k.sum())


def _centred(k: np.ndarray) -> np.ndarray:
    """``k`` shifted (bilinearly) so that its centre of mass is its centre tap; sum 1."""
    from scipy import ndimage

    middle = (np.array(k.shape) - 1) / 2
    offset = middle - np.array(ndimage.center_of_mass(k))
    moved = np.clip(ndimage.shift(k, offset, order=1, mode="constant"), 0, None)
    return (moved / moved.sum()).astype(np.float32)


def kernel_error(learned: np.ndarray, truth: np.ndarray, max_shift: int = 2) -> float:
    """How far a learned kernel is from the true one: ||k − t||² / ||t||² for both normalised
    to sum 1, zero-padded to a common odd size, minimised over whole-pixel shifts of k of at
    most ``max_shift`` (a fit may learn the kernel one pixel off and shift its picture back).
    0: the truth up to such a shift; a sub-pixel offset or another shape scores > 0. The
    delta start scores ||δ − t||² / ||t||²."""
    k = np.asarray(learned, np.float64) / float(np.sum(learned))
    t = np.asarray(truth, np.float64) / float(np.sum(truth))
    side = max(*k.shape, *t.shape) + 2 * max_shift
    k, t = _padded(k, side), _padded(t, side)
    energy = float(np.sum(t * t))
    shifts = range(-max_shift, max_shift + 1)
    return min(
        float(np.sum((np.roll(k, (dy, dx), axis=(0, 1)) - t) ** 2)) / energy
        for dy in shifts
        for dx in shifts
    )


def _padded(k: np.ndarray, side: int) -> np.ndarray:
    """``k`` centred in a side × side array of zeros (``side`` odd, ≥ its sides)."""
    out = np.zeros((side, side))
    top, left = (side - k.shape[0]) // 2, (side - k.shape[1]) // 2
    out[top : top + k.shape[0], left : left + k.shape[1]] = k
    return out


def parse_kernel(spec: str) -> np.ndarray | None:
    """``learned`` → None; ``delta``; ``gaussian:SIGMA``; ``gaussian:SX,SY,THETA`` (degrees);
    or a ``.npy`` file holding a 2-D kernel (normalised to sum 1)."""
    if spec == "learned":
        return None
    if spec == "delta":
        return delta_kernel()
    if spec.startswith("gaussian:"):
        try:
            values = [float(v) for v in spec[len("gaussian:") :].split(",")]
        except ValueError:
            values = []
        if len(values) == 1:
            return gaussian_kernel(values[0])
        if len(values) == 3:
            return gaussian_kernel(values[0], values[1], math.radians(values[2]))
        raise ValueError(f"kernel {spec!r}: expected gaussian:SIGMA or gaussian:SX,SY,THETA")
    if spec.endswith(".npy"):
        return load_kernel(spec)
    raise ValueError(
        f"kernel {spec!r}: use learned, delta, gaussian:SIGMA, gaussian:SX,SY,THETA or FILE.npy"
    )


def load_kernel(path: str) -> np.ndarray:
    try:
        k = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a kernel ({err})") from None
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not np.isfinite(k).all():
        raise ValueError(f"{path}: a kernel must be a finite 2-D array of odd sides; got {k.shape}")
    if abs(float(k.sum())) < 1e-8:
        raise ValueError(f"{path}: the kernel sums to 0")
    return (k / k.sum()).astype(np.float32)


def downsample(image: torch.Tensor, kernel: torch.Tensor, scale: int) -> torch.Tensor:
    """(C, H, W) → (C, ⌈H/r⌉, ⌈W/r⌉): mirror-padded correlation with ``kernel``, then every
    r-th pixel."""
    kh, kw = kernel.shape
    padded = F.pad(image.unsqueeze(1), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    weight = kernel.to(image.dtype).view(1, 1, kh, kw)
    return F.conv2d(padded, weight, stride=scale).squeeze(1)


def degrade_sr(clean: np.ndarray, scale: int, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop HR to a multiple of ``scale`` (top-left anchored) and downsample it.

    Returns (the cropped HR ground truth, the LR observation), both (H, W, C) float32.
    """
    h, w = (clean.shape[0] // scale) * scale, (clean.shape[1] // scale) * scale
    if h == 0 or w == 0:
        raise ValueError(f"image {clean.shape[1]}×{clean.shape[0]} is smaller than ×{scale}")
    hr = np.ascontiguousarray(clean[:h, :w], dtype=np.float32)
    pad = max(kernel.shape) // 2
    if pad >= min(h, w):
        raise ValueError(f"kernel {kernel.shape} is too large for a {w}×{h} image")
    tensor = torch.from_numpy(hr).permute(2, 0, 1)
    lr = downsample(tensor, torch.from_numpy(kernel), scale).permute(1, 2, 0).numpy()
    return hr, np.clip(lr, 0, 1).astype(np.float32)


def lr_coordinates(height: int, width: int, scale: int) -> torch.Tensor:
    """(h·w, 2) coordinates of LR pixels in the HR frame: LR pixel (i, j) is HR pixel
    (r·i, r·j), so its coordinate is that pixel's centre (matches ``model.pixel_grid``)."""
    rows = (torch.arange(height, dtype=torch.float32) * scale + 0.5) / (height * scale)
    cols = (torch.arange(width, dtype=torch.float32) * scale + 0.5) / (width * scale)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel W(x); a = −0.5 (MATLAB's imresize) reproduces quadratics
    exactly, unlike a = −0.75 (torch's and OpenCV's bicubic)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1  # |x| ≤ 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _cubic_taps(n_low: int, scale: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """For each of the r·n HR positions y (LR position t = y / r): the 4 LR indices around t,
    clamped to the image (edge replication), and their Keys weights. Both (4, r·n)."""
    t = np.arange(n_low * scale, dtype=np.float64) / scale
    base = np.floor(t)
    offsets = np.arange(-1, 3, dtype=np.float64)[:, None]  # taps at ⌊t⌋ − 1 … ⌊t⌋ + 2
    weights = keys_cubic(t - (base + offsets), a)
    index = np.clip(base + offsets, 0, n_low - 1).astype(np.int64)
    return index, weights


def bicubic_upsample(low: np.ndarray, scale: int, a: float = -0.5) -> np.ndarray:
    """(h, w, C) → (r·h, r·w, C) float32 bicubic interpolation: Keys' cubic convolution with
    a = −0.5 by default, separable, on the same sampling grid as the degradation (LR pixel i on
    HR pixel r·i, so HR pixel y samples LR position y / r), borders by edge replication,
    clipped to [0, 1]. ``a = -0.75`` gives torch's ``grid_sample(mode="bicubic")`` instead."""
    low = np.asarray(low, dtype=np.float64)
    row_index, row_weights = _cubic_taps(low.shape[0], scale, a)
    col_index, col_weights = _cubic_taps(low.shape[1], scale, a)
    rows = sum(w[:, None, None] * low[i] for i, w in zip(row_index, row_weights, strict=True))
    up = sum(w[None, :, None] * rows[:, i] for i, w in zip(col_index, col_weights, strict=True))
    return np.clip(up, 0, 1).astype(np.float32)


class LearnedDownsampler(nn.Module):
    """A deep linear convolution stack (no bias, no activation), shared across channels, whose
    last layer has stride r: KernelGAN's generator. Layer sizes from config (e.g. 7,5,3,1,1,1,
    width 64); its composed kernel is 13×13 for those sizes."""

    def __init__(self, sizes: tuple[int, ...], width: int, scale: int) -> None:
        super().__init__()
        if any(s % 2 == 0 for s in sizes):
            raise ValueError(f"learned kernel layer sizes must be odd; got {sizes}")
        channels = [1] + [width] * (len(sizes) - 1) + [1]
        self.scale = scale
        self.layers = nn.ModuleList(
            nn.Conv2d(a, b, k, bias=False, stride=scale if i == len(sizes) - 1 else 1)
            for i, (a, b, k) in enumerate(zip(channels[:-1], channels[1:], sizes, strict=True))
        )
        self.size = sum(s - 1 for s in sizes) + 1
        self._start_as_delta(width)

    @torch.no_grad()
    def _start_as_delta(self, width: int) -> None:
        """Centre taps that average the channels: the composed kernel starts as a delta (plain
        subsampling), plus a little noise so the channels can diverge."""
        for i, layer in enumerate(self.layers):
            w = layer.weight
            w.normal_(0.0, 1e-3)
            c = w.shape[-1] // 2
            w[:, :, c, c] += 1.0 if i == 0 else 1.0 / width

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pad = self.size // 2
        x = F.pad(image.unsqueeze(1), (pad, pad, pad, pad), mode="reflect")
        for layer in self.layers:
            x = layer(x)
        return x.squeeze(1)

    def kernel(self) -> torch.Tensor:
        """The exact composed kernel (size × size) such that ``forward`` equals
        ``downsample(image, kernel(), scale)``: the stack's response to every unit impulse."""
        n = self.size
        impulses = torch.eye(n * n, device=self.layers[0].weight.device).view(n * n, 1, n, n)
        x = impulses
        for layer in self.layers:
            x = F.conv2d(x, layer.weight)  # stride 1: the last layer's stride only subsamples
        return x.view(n, n)

    def sum_penalty(self) -> torch.Tensor:
        """(Σk − 1)²: the kernel should keep the image's mean brightness."""
        return (self.kernel().sum() - 1.0) ** 2

    def spread_penalty(self) -> torch.Tensor:
        """Σ|k|·d²/R²: weight far from the centre costs more (KernelGAN's boundary prior), so
        a blind fit prefers compact kernels."""
        k = self.kernel()
        n = k.shape[0]
        r = torch.arange(n, device=k.device, dtype=k.dtype) - n // 2
        distance = (r[:, None] ** 2 + r[None, :] ** 2) / (n // 2) ** 2
        return (k.abs() * distance).sum()
