"""Multi-scale patch stacks, gathered from whole images with dilated unfolds.

A patch stack at pixel ``x`` holds, for each scale ``s`` and each element ``(ky, kx)`` of a P×P
patch, the value of the (pre-blurred) image at ``x + ((ky − m)·s, (kx − m)·s)`` with ``m = P // 2``:
dilated sampling on the full-resolution grid, as in the authors' code. Elements that fall
outside the image, or whose value depends on unknown pixels, are flagged as not known.

Layout: values ``(N, C, S, P, P)`` and known flags ``(N, S, P, P)`` with ``N = H·W`` in row-major
pixel order, the same order as ``knitwork.model.pixel_grid``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from knitwork.config import PatchConfig


def gaussian_taps(scale: int, device: torch.device | None = None) -> torch.Tensor:
    """1-D Gaussian of σ = scale and radius scale − 1 (the authors' anti-aliasing filter)."""
    radius = scale - 1
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    taps = torch.exp(-0.5 * (x / scale) ** 2)
    return taps / taps.sum()


def _separable(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Zero-padded separable convolution of ``(C, H, W)`` with the same taps along both axes."""
    c = image.shape[0]
    r = taps.numel() // 2
    x = image.unsqueeze(0)
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)
    return x.squeeze(0)


def masked_blur(
    image: torch.Tensor, known: torch.Tensor, scale: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur ``image`` (C, H, W) for sampling at ``scale`` using only known, in-image pixels.

    The filter is renormalised over the known pixels under it, so a blurred value never depends
    on what sits inside a hole and borders are not darkened by the zero padding. A blurred value
    counts as known where its own pixel is known (the authors' rule), now without the hole's
    contents leaking into it.
    """
    if scale == 1:
        return image * known, known
    taps = gaussian_taps(scale, image.device).to(image.dtype)
    k = known.to(image.dtype).unsqueeze(0)
    weight = _separable(k, taps)
    blurred = _separable(image * k, taps) / weight.clamp_min(1e-12)
    return blurred * known, known


def _dilated_unfold(image: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    """``(C, H, W)`` → ``(H·W, C, P, P)``: the dilated P×P neighbourhood of every pixel."""
    c, h, w = image.shape
    pad = (size // 2) * scale
    padded = F.pad(image.unsqueeze(0), (pad, pad, pad, pad))
    cols = F.unfold(padded, kernel_size=size, dilation=scale)  # (1, C·P·P, H·W)
    return cols.view(c, size, size, h * w).permute(3, 0, 1, 2)


def patch_stack(
    image: torch.Tensor, known: torch.Tensor | None, config: PatchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch stacks of ``image`` (C, H, W) at every pixel, and which elements are known.

    ``known`` is an (H, W) bool mask of observed pixels (None: all observed). Differentiable in
    ``image``, so it also builds the consistency targets from a predicted image.
    """
    _c, h, w = image.shape
    if known is None:
        known = torch.ones(h, w, dtype=torch.bool, device=image.device)
    values, flags = [], []
    for scale in config.scales:
        if config.blur:
            blurred, ok = masked_blur(image, known, scale)
        else:
            blurred, ok = image * known, known
        values.append(_dilated_unfold(blurred, config.size, scale))
        ok = ok.to(image.dtype).unsqueeze(0)
        flags.append(_dilated_unfold(ok, config.size, scale)[:, 0] > 0.5)
    return torch.stack(values, dim=2), torch.stack(flags, dim=1)


def in_image(height: int, width: int, config: PatchConfig, device=None) -> torch.Tensor:
    """(N, S, P, P) bool: which stack elements of each pixel fall inside the image."""
    ones = torch.ones(1, height, width, device=device)
    flags = [_dilated_unfold(ones, config.size, s)[:, 0] > 0.5 for s in config.scales]
    return torch.stack(flags, dim=1)


def centre_index(config: PatchConfig) -> tuple[int, int, int]:
    """Index (scale, row, col) of the centre element of the finest-scale patch."""
    m = config.size // 2
    return 0, m, m


def stack_width(channels: int, config: PatchConfig) -> int:
    """Number of values in one flattened patch stack."""
    return channels * len(config.scales) * config.size * config.size


def describe(config: PatchConfig) -> str:
    """Short human-readable summary, e.g. ``3×3 at scales 1,2,4``."""
    scales = ",".join(str(s) for s in config.scales)
    return f"{config.size}×{config.size} at scale{'s' if len(config.scales) > 1 else ''} {scales}"


def add_finest_votes(
    finest: torch.Tensor,
    index: torch.Tensor,
    height: int,
    width: int,
    sums: torch.Tensor,
    counts: torch.Tensor,
) -> None:
    """Aggregation: add the finest-scale patches ``finest`` (n, C, P, P), predicted at the pixels
    ``index`` (n,) of an H×W grid (row-major), to the pixels they cover: element (ky, kx) of
    pixel x's patch is a prediction of pixel x + (ky − m, kx − m). ``sums`` (H·W, C) and
    ``counts`` (H·W,) accumulate in place; their ratio is the aggregated image. Every pixel is
    covered by up to P² patches (its own and its neighbours'), as in patch-based denoisers."""
    size = finest.shape[-1]
    m = size // 2
    rows, cols = index // width, index % width
    for ky in range(size):
        for kx in range(size):
            y, x = rows + ky - m, cols + kx - m
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            target = (y * width + x)[inside]
            sums.index_add_(0, target, finest[inside, :, ky, kx].to(sums.dtype))
            counts.index_add_(0, target, torch.ones_like(target, dtype=counts.dtype))
