"""The losses of paper eq. 1–4. Each is a plain function of tensors; ``generator_losses``
returns them as named terms so that logging never has to know which exist.

Reductions are means (over known entries, valid pairs, channels), so that α, β and γ do not
change meaning with the image size, patch size or number of scales. The authors' code sums
per-offset means for consistency and sums over RGB for reconstruction; the ``paper-*`` presets
convert their weights accordingly (see ``knitwork.presets``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from knitwork.config import LossConfig, PatchConfig
from knitwork.patches import centre_index, patch_stack


def patch_reconstruction_loss(
    field: torch.Tensor, target: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Eq. 1: MSE between predicted (N, C, S, P, P) and observed stacks over known elements."""
    weight = known.unsqueeze(1).to(field.dtype)  # (N, 1, S, P, P)
    squared = (field - target) ** 2 * weight
    return squared.sum() / (weight.sum() * field.shape[1]).clamp_min(1)


def consistency_loss(
    field: torch.Tensor, height: int, width: int, config: PatchConfig
) -> torch.Tensor:
    """Eq. 2: every stack element must agree with the image of centre predictions it covers.

    The centre elements of the finest scale form an image; its own patch stacks (pre-blurred at
    each scale exactly as the observed targets are) are what each predicted stack should equal.
    Pairs that fall outside the image are excluded; every row and column takes part.
    """
    s, r, c = centre_index(config)
    centre = field[:, :, s, r, c].T.reshape(-1, height, width)  # (C, H, W)
    reference, inside = patch_stack(centre, None, config)
    weight = inside.unsqueeze(1).to(field.dtype)
    squared = (field - reference) ** 2 * weight
    return squared.sum() / (weight.sum() * field.shape[1]).clamp_min(1)


def pixel_loss(
    pred: torch.Tensor, target: torch.Tensor, known: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """Eq. 3: L1 (paper) or MSE between reconstructed and observed colours on known pixels
    (a mean over the known ones, taken with weights so that it also runs batched)."""
    diff = pred - target
    error = diff.abs() if kind == "l1" else diff**2
    weight = known.unsqueeze(1).to(error.dtype)
    return (error * weight).sum() / (weight.sum() * pred.shape[1]).clamp_min(1)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values``, or its ``weight``-weighted mean (padding rows weigh 0)."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(1)


def _bce(logits: torch.Tensor, label: float, weight: torch.Tensor | None) -> torch.Tensor:
    target = torch.full_like(logits, label)
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return weighted_mean(losses, weight)


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    label_smoothing: float,
    real_weight: torch.Tensor | None = None,
    fake_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE with one-sided label smoothing: real patches are labelled 1 − smoothing, fakes 0.
    The weights (1 for a patch, 0 for padding) let packed fits pad sets of unequal size."""
    real = _bce(real_logits, 1.0 - label_smoothing, real_weight)
    return real + _bce(fake_logits, 0.0, fake_weight)


def generator_gan_loss(
    fake_logits: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The generator's BCE term: predicted patches should be scored as real (label 1)."""
    return _bce(fake_logits, 1.0, weight)


def alpha_at(step: int, config: LossConfig) -> float:
    """α at ``step``: constant, or a sigmoid ramp reaching α/2 at ``alpha_ramp_mid``."""
    if config.alpha_ramp == "none":
        return config.alpha
    z = (step - config.alpha_ramp_mid) / config.alpha_ramp_width
    return config.alpha / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


@dataclass(kw_only=True)
class Targets:
    """Everything a fit compares against, built once from the observation."""

    real: torch.Tensor  # (R, C·S·P·P) fully observed stacks: the discriminator's real set
    full: torch.Tensor  # (N,) stacks lying wholly inside the image: the fakes it is shown
    height: int  # of the grid the field is predicted on (SR: the high-resolution grid)
    width: int
    stacks: torch.Tensor | None = None  # (N, C, S, P, P) observed stacks (0 where unknown)
    stack_known: torch.Tensor | None = None  # (N, S, P, P) which stack elements are observed
    colours: torch.Tensor | None = None  # (N, C) observed pixel colours
    pixel_known: torch.Tensor | None = None  # (N,) which pixels are observed
    low_res: torch.Tensor | None = None  # SR: (C, h, w) the observed low-resolution image
    low_res_weight: torch.Tensor | None = None  # SR crops: (h, w) which LR pixels are compared
    # (N, C) SR with loss.sr_guide: the bicubic HR colours; inpainting with loss.inpaint_guide:
    # the biharmonic fill (compared on the pixels that are not known)
    guide: torch.Tensor | None = None


def downsampling_loss(
    pixels: torch.Tensor, targets: Targets, downsample: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """SR: mean squared error between the downsampled prediction and the observed LR image
    (a plain mean; the authors' code multiplies it by the image height)."""
    image = pixels.T.reshape(-1, targets.height, targets.width)
    squared = (downsample(image) - targets.low_res) ** 2
    if targets.low_res_weight is None:
        return squared.mean()
    weight = targets.low_res_weight.to(squared.dtype)
    return (squared * weight).sum() / (weight.sum() * squared.shape[0]).clamp_min(1)


def guide_weight(step: int, config: LossConfig, inpaint: bool = False, steps: int = 0) -> float:
    """The guide's weight at ``step``: ``loss.sr_guide`` at step 0, linearly down to 0 at
    ``sr_guide_steps``; inpainting, ``inpaint_guide`` down to 0 at ``inpaint_guide_fade`` ×
    ``steps`` (the fit's, ``optim.steps``), or never when that is 0."""
    if inpaint:
        end = config.inpaint_guide_fade * steps
        fade = 1.0 if end <= 0 else max(0.0, 1.0 - step / end)
        return config.inpaint_guide * fade
    return config.sr_guide * max(0.0, 1.0 - step / config.sr_guide_steps)


def generator_losses(
    field: torch.Tensor,
    pixels: torch.Tensor | None,
    fake_logits: torch.Tensor | None,
    targets: Targets,
    config: LossConfig,
    patches: PatchConfig,
    step: int,
    downsample: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fake_weight: torch.Tensor | None = None,
    steps: int = 0,
) -> dict[str, torch.Tensor]:
    """Eq. 4 as named terms; ``total`` = recon + α·consistency + β·pixel + γ·gan. In SR there is
    no recon term and the β term is the downsampling loss ``down``. ``fake_weight`` weighs the
    fake logits (packed fits pad them); ``steps`` (the fit's) times inpainting's guide fade."""
    terms: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=field.device)
    if targets.stacks is not None:
        terms["recon"] = patch_reconstruction_loss(field, targets.stacks, targets.stack_known)
        total = total + terms["recon"]
    alpha = alpha_at(step, config)
    if config.alpha > 0:
        terms["consistency"] = consistency_loss(field, targets.height, targets.width, patches)
        total = total + alpha * terms["consistency"]
    if config.beta > 0 and pixels is not None and targets.low_res is not None:
        terms["down"] = downsampling_loss(pixels, targets, downsample)
        total = total + config.beta * terms["down"]
    elif config.beta > 0 and pixels is not None:
        terms["pixel"] = pixel_loss(pixels, targets.colours, targets.pixel_known, config.pixel)
        total = total + config.beta * terms["pixel"]
    inpaint = targets.low_res is None  # the guide of a fit that is not SR is inpainting's
    guide = guide_weight(step, config, inpaint, steps)
    if guide > 0 and pixels is not None and targets.guide is not None:
        compared = (
            ~targets.pixel_known
            if inpaint
            else torch.ones(pixels.shape[:-1], dtype=torch.bool, device=pixels.device)
        )
        terms["guide"] = pixel_loss(pixels, targets.guide, compared, config.pixel)
        total = total + guide * terms["guide"]
    if config.gamma > 0 and fake_logits is not None:
        terms["gan"] = generator_gan_loss(fake_logits, fake_weight)
        total = total + config.gamma * terms["gan"]
    terms["total"] = total
    return terms
