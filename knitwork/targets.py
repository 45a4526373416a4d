"""What a fit compares against: observed patch stacks and colours, the discriminator's real
patches, which predicted stacks lie inside the image; for the whole grid once, or for one
sampled crop at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from knitwork.config import PatchConfig
from knitwork.losses import Targets
from knitwork.model import Knitwork
from knitwork.patches import describe, in_image, patch_stack
from knitwork.tasks import Observation


def build_targets(
    observation: Observation,
    model: Knitwork,
    device: torch.device,
    held: np.ndarray | None = None,
    real_image: torch.Tensor | None = None,
) -> Targets:
    """Observed stacks, colours and the discriminator's real set, computed once per fit.
    ``held`` (H, W): pixels left out of every loss (self-validation); the discriminator's
    real set still takes its patches from every observed pixel, of ``real_image`` (C, H, W)
    when given (a pre-smoothed image) rather than of the observed one."""
    patches = model.config.patches
    image = torch.from_numpy(observation.image).to(device).permute(2, 0, 1).contiguous()
    known = torch.from_numpy(observation.known).to(device)
    h, w = observation.known.shape
    box = (0, 0, h, w)
    fitted = known if held is None else known & ~torch.from_numpy(held).to(device)
    targets = crop_targets(image, fitted, box, patches)
    if held is not None or real_image is not None:
        source = image if real_image is None else real_image
        targets.real = crop_targets(source, known, box, patches).real
    if model.discriminator is not None and (len(targets.real) == 0 or not targets.full.any()):
        raise ValueError(
            f"no {describe(patches)} patch stack fits wholly inside the known part of this "
            f"{w}×{h} image, so the discriminator has no real patches: use smaller patch "
            "scales (model.patches.scales) or switch the GAN off (loss.gamma: 0)"
        )
    return targets


def build_sr_targets(observation: Observation, model: Knitwork, device: torch.device) -> Targets:
    """Super-resolution: the field lives on the HR grid; the discriminator's real patches are
    the LR image's own stacks, and the LR image is what the downsampled output must match."""
    patches = model.config.patches
    low = torch.from_numpy(observation.image).to(device).permute(2, 0, 1).contiguous()
    h, w = observation.image.shape[:2]
    big_h, big_w = observation.output_shape
    stacks, _ = patch_stack(low, None, patches)
    real = stacks[in_image(h, w, patches, device).flatten(1).all(dim=1)].flatten(1)
    full = in_image(big_h, big_w, patches, device).flatten(1).all(dim=1)
    if model.discriminator is not None and len(real) == 0:
        raise ValueError(
            f"no {describe(patches)} patch stack fits inside this {w}×{h} low-resolution image, "
            "so the discriminator has no real patches: use smaller patch scales or loss.gamma: 0"
        )
    return Targets(real=real, full=full, height=big_h, width=big_w, low_res=low)


def patch_margin(config: PatchConfig) -> int:
    """How far outside a pixel its stack reaches, pre-blur included: a crop grown by this much
    gives its pixels exactly the stacks they have in the whole image."""
    blur = (lambda s: s - 1) if config.blur else (lambda s: 0)
    return max(s * (config.size // 2) + blur(s) for s in config.scales)


def crop_targets(
    image: torch.Tensor, known: torch.Tensor, box: tuple[int, int, int, int], config: PatchConfig
) -> Targets:
    """Targets of the crop ``box`` = (top, left, height, width) of ``image`` (C, H, W) with
    ``known`` (H, W): computed on the crop grown by ``patch_margin`` (clipped to the image),
    so each stack equals its whole-image stack; the whole image is the box (0, 0, H, W). The
    real set is the box's wholly observed stacks (possibly none)."""
    top, left, ch, cw = box
    _c, h, w = image.shape
    m = patch_margin(config)
    r0, r1, c0, c1 = max(0, top - m), min(h, top + ch + m), max(0, left - m), min(w, left + cw + m)
    region, region_known = image[:, r0:r1, c0:c1], known[r0:r1, c0:c1]
    stacks, stack_known = patch_stack(region, region_known, config)
    full = in_image(r1 - r0, c1 - c0, config, image.device)
    colours, pixel_known = region.flatten(1).T, region_known.flatten()
    if (r1 - r0, c1 - c0) != (ch, cw):  # keep the crop's own pixels of the grown region
        rows = torch.arange(top - r0, top - r0 + ch, device=image.device)
        cols = torch.arange(left - c0, left - c0 + cw, device=image.device)
        index = (rows[:, None] * (c1 - c0) + cols[None, :]).flatten()
        stacks, stack_known, full = stacks[index], stack_known[index], full[index]
        colours, pixel_known = colours[index], pixel_known[index]
    return Targets(
        stacks=stacks,
        stack_known=stack_known,
        colours=colours.contiguous(),
        pixel_known=pixel_known,
        real=stacks[stack_known.flatten(1).all(dim=1)].flatten(1),
        full=full.flatten(1).all(dim=1),
        height=ch,
        width=cw,
    )


def whole_stacks(
    size: tuple[int, int], box: tuple[int, int, int, int], config: PatchConfig, device=None
) -> torch.Tensor:
    """(rows·cols,) bool over the crop ``box`` of an image of ``size``: which pixels' stacks lie
    wholly inside the image (from the geometry alone, so a large image costs nothing)."""
    h, w = size
    top, left, rows, cols = box
    reach = max(config.scales) * (config.size // 2)
    y = torch.arange(top, top + rows, device=device)
    x = torch.arange(left, left + cols, device=device)
    inside_y = (y >= reach) & (y < h - reach)
    inside_x = (x >= reach) & (x < w - reach)
    return (inside_y[:, None] & inside_x[None, :]).flatten()


def sr_crop_targets(
    low: torch.Tensor, box: tuple[int, int, int, int], scale: int, reach: int, config: PatchConfig
) -> Targets:
    """Super-resolution targets of the LR crop ``box`` = (top, left, rows, cols) of ``low``
    (C, h, w): the field is fitted on the matching HR crop (``scale`` × the box). The LR pixels
    compared are those whose downsampling window (``reach`` HR pixels each side of its centre)
    the HR crop holds as the whole image would: inside it, or mirrored at an image border
    (``low_res_weight``). The discriminator's real patches are the LR crop's own whole
    stacks."""
    _c, h, w = low.shape
    top, left, rows, cols = box
    weight = torch.ones(rows, cols, device=low.device)
    j = torch.arange(rows, device=low.device)
    i = torch.arange(cols, device=low.device)
    if top > 0:
        weight[scale * j - reach < 0] = 0
    if top + rows < h:
        weight[scale * j + reach > scale * rows - 1] = 0
    if left > 0:
        weight[:, scale * i - reach < 0] = 0
    if left + cols < w:
        weight[:, scale * i + reach > scale * cols - 1] = 0
    known = torch.ones(h, w, dtype=torch.bool, device=low.device)
    lr = crop_targets(low, known, box, config)
    real = lr.stacks[whole_stacks((h, w), box, config, low.device)].flatten(1)
    hr_box = (scale * top, scale * left, scale * rows, scale * cols)
    full = whole_stacks((scale * h, scale * w), hr_box, config, low.device)
    return Targets(
        real=real,
        full=full,
        height=scale * rows,
        width=scale * cols,
        low_res=low[:, top : top + rows, left : left + cols],
        low_res_weight=weight,
    )
