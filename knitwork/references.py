"""What a fit compares its output against besides the observed pixels, derived once from the
observation: super-resolution's downsampling operator and its bicubic guide
(``loss.sr_guide``), inpainting's biharmonic guide (``loss.inpaint_guide``), denoising's
pre-smoothed real image (``loss.real_blur``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from knitwork.classical import inpaint_biharmonic
from knitwork.config import Config
from knitwork.kernels import bicubic_upsample, downsample, gaussian_kernel
from knitwork.model import Knitwork
from knitwork.tasks import Observation


def downsampler(
    obs: Observation, model: Knitwork, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """SR: the learned kernel the model carries, or the known kernel as a fixed operator."""
    if model.downsampler is not None:
        return model.downsampler
    kernel = torch.from_numpy(obs.kernel).to(device)
    return lambda image: downsample(image, kernel, obs.scale)


def kernel_reach(obs: Observation, model: Knitwork) -> int:
    """SR: how many HR pixels on each side of a centre one LR pixel's value depends on."""
    if model.downsampler is not None:
        return model.downsampler.size // 2
    return max(obs.kernel.shape) // 2


def guide_image(obs: Observation, config: Config, device: torch.device) -> torch.Tensor | None:
    """(C, H, W) what the guide loss pulls towards: ``loss.sr_guide`` (Knitwork SR) the bicubic
    upsampling of the LR image, ``loss.inpaint_guide`` (Knitwork inpainting) the biharmonic
    fill of the holes; None when the task's guide is off."""
    if config.model.method != "knitwork":
        return None
    if obs.task == "sr" and config.loss.sr_guide > 0:
        guide = bicubic_upsample(obs.image, obs.scale)
    elif obs.task == "inpaint" and config.loss.inpaint_guide > 0:
        guide = inpaint_biharmonic(obs).astype(obs.image.dtype)
    else:
        return None
    return torch.from_numpy(guide).to(device).permute(2, 0, 1).contiguous()


def smoothed_real(obs: Observation, config: Config, device: torch.device) -> torch.Tensor | None:
    """``loss.real_blur`` (denoising): the pre-smoothed image (C, H, W) that the
    discriminator's real patches come from."""
    sigma = config.loss.real_blur
    if sigma <= 0 or obs.task != "denoise":
        return None
    image = torch.from_numpy(obs.image).to(device).permute(2, 0, 1)
    return downsample(image, torch.from_numpy(gaussian_kernel(sigma)).to(device), 1)
