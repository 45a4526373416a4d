"""What one step needs beside the Trainer's state, shared with packed fits: learning rates, a
frozen discriminator, the finite-loss check, the weight average (``optim.ema``), the weights
kept or swapped in for drawing (``optim.keep_best``) and the denoising stop rules
(``optim.early_stop``)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from knitwork.config import Config
from knitwork.metrics import estimate_noise
from knitwork.tasks import Observation


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the terms."""


def set_lr(optimiser: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (the schedule is a function of the step)."""
    for group in optimiser.param_groups:
        group["lr"] = lr


@contextmanager
def frozen(module: torch.nn.Module):
    """Run ``module`` without recording gradients for its own weights (inputs still get them)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def check_finite(step: int, terms: dict[str, torch.Tensor]) -> None:
    if not torch.isfinite(terms["total"]):
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"loss became non-finite at step {step} ({values}): lower the learning rates "
            "(optim.lr, optim.d_lr) or the loss weights"
        )


def ema_decay(ema: float, step: int) -> float:
    """The weight average's decay after ``step`` (0-based) generator updates: ``optim.ema``,
    warmed up so that the first steps do not anchor the average at the initial weights."""
    return min(ema, (1 + step) / (10 + step))


@torch.no_grad()
def update_average(averaged: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    for mean, value in zip(averaged, params, strict=True):
        mean.lerp_(value.detach(), 1 - decay)


@torch.no_grad()
def kept_copy(kept: list[torch.Tensor] | None, weights) -> list[torch.Tensor]:
    """``kept`` overwritten with ``weights`` (a fresh copy when there is none yet)."""
    if kept is None:
        return [w.detach().clone() for w in weights]
    for k, w in zip(kept, weights, strict=True):
        k.copy_(w)
    return kept


@contextmanager
def weights_in_place(params: list[torch.Tensor], values: list[torch.Tensor] | None):
    """``values`` copied into ``params`` for the duration (nothing when None), then put back."""
    if values is None:
        yield
        return
    current = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, value in zip(params, values, strict=True):
            p.copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, current, strict=True):
                p.copy_(value)


def held_out(observation: Observation, config: Config, seed: int) -> np.ndarray | None:
    """``optim.early_stop: holdout`` (denoising): the (H, W) bool mask of pixels left out of
    every loss, a seeded ``optim.holdout`` fraction; None otherwise."""
    if config.optim.early_stop != "holdout" or observation.task != "denoise":
        return None
    rng = np.random.default_rng([seed, 0x401D])
    return rng.random(observation.known.shape) < config.optim.holdout


def noise_floor(observation: Observation, config: Config) -> float | None:
    """The residual RMS at which a denoising fit stops (``optim.early_stop: noise``): the noise
    level estimated from the noisy image, which the clean image would sit at."""
    if config.optim.early_stop != "noise" or observation.task != "denoise":
        return None
    return estimate_noise(observation.image)
