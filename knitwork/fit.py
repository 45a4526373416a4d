"""The one fit loop: every task and the MLP baseline, full-grid steps, one forward per step.

Each step computes the patch field once and reuses it for every term: the discriminator sees it
detached, then the generator's losses (eq. 4) are taken on the same tensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from knitwork.config import Config
from knitwork.kernels import LearnedDownsampler, downsample, lr_coordinates
from knitwork.losses import Targets, discriminator_loss, generator_losses
from knitwork.metrics import estimate_noise, psnr
from knitwork.model import Knitwork, count_parameters, pixel_grid
from knitwork.patches import describe, in_image, patch_stack
from knitwork.tasks import Observation

StepCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the terms."""


@dataclass
class FitResult:
    image: np.ndarray  # (H, W, C) restored image in [0, 1] (known pixels kept if asked)
    raw: np.ndarray  # (H, W, C) the reconstructor's output, clipped: the paper's protocol
    model: Knitwork  # trained model, on the CPU
    config: Config
    task: str
    seed: int
    seconds: float  # wall-clock time of the optimisation loop
    history: list[dict[str, float]] = field(default_factory=list)
    scale: int = 1  # super-resolution factor (the result is scale × the input's size)
    stopped_at: int | None = None  # the step an early stop ended the fit at, if it did

    @property
    def steps(self) -> int:
        return self.stopped_at or self.config.optim.steps

    @property
    def parameters(self) -> int:
        """Trainable parameters of every network that was fitted (discriminator included)."""
        return count_parameters(self.model)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def build_targets(observation: Observation, model: Knitwork, device: torch.device) -> Targets:
    """Observed stacks, colours and the discriminator's real set, computed once per fit."""
    patches = model.config.patches
    image = torch.from_numpy(observation.image).to(device).permute(2, 0, 1).contiguous()
    known = torch.from_numpy(observation.known).to(device)
    h, w = observation.known.shape
    stacks, stack_known = patch_stack(image, known, patches)
    full = in_image(h, w, patches, device).flatten(1).all(dim=1)
    real = stacks[stack_known.flatten(1).all(dim=1)].flatten(1)
    if model.discriminator is not None and (len(real) == 0 or not full.any()):
        raise ValueError(
            f"no {describe(patches)} patch stack fits wholly inside the known part of this "
            f"{w}×{h} image, so the discriminator has no real patches: use smaller patch "
            "scales (model.patches.scales) or switch the GAN off (loss.gamma: 0)"
        )
    return Targets(
        stacks=stacks,
        stack_known=stack_known,
        colours=image.flatten(1).T.contiguous(),
        pixel_known=known.flatten(),
        real=real,
        full=full,
        height=h,
        width=w,
    )


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
    return Targets(None, None, None, None, real, full, big_h, big_w, low_res=low)


def _check_finite(step: int, terms: dict[str, torch.Tensor]) -> None:
    if not torch.isfinite(terms["total"]):
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"loss became non-finite at step {step} ({values}): lower the learning rates "
            "(optim.lr, optim.d_lr) or the loss weights"
        )


class Trainer:
    """State of one fit: model, optimisers, targets. ``step`` runs one iteration."""

    def __init__(self, observation: Observation, config: Config, seed: int) -> None:
        self.config = config
        self.device = resolve_device(config.optim.device)
        torch.manual_seed(seed)
        channels = observation.image.shape[2]
        gan = config.loss.gamma > 0
        self.model = Knitwork(config.model, channels, seed, discriminator=gan)
        self.downsample = None
        self.super_resolve = observation.task == "sr" and config.model.method == "knitwork"
        if self.super_resolve:
            self.downsample = self._downsampler(observation)
        self.model.to(self.device)
        if self.super_resolve:
            self.targets = build_sr_targets(observation, self.model, self.device)
            coords = pixel_grid(*observation.output_shape, self.device)
        else:  # every other task, and the MLP baseline for SR: fit the observed pixels
            self.targets = build_targets(observation, self.model, self.device)
            h, w = observation.known.shape
            coords = (
                lr_coordinates(h, w, observation.scale).to(self.device)
                if observation.task == "sr"
                else pixel_grid(h, w, self.device)
            )
        with torch.no_grad():
            self.features = self.model.encoding(coords)
        self.opt_g = torch.optim.Adam(self.model.generator_parameters(), lr=config.optim.lr)
        self.opt_d = (
            torch.optim.Adam(self.model.discriminator.parameters(), lr=config.optim.d_lr)
            if gan
            else None
        )
        bf16 = config.optim.precision == "bf16"
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        )

    def _downsampler(self, observation: Observation):
        """The known kernel as a fixed operator, or a learned one the model carries."""
        if observation.kernel is not None:
            kernel = torch.from_numpy(observation.kernel).to(self.device)
            return lambda image: downsample(image, kernel, observation.scale)
        m = self.config.model
        self.model.downsampler = LearnedDownsampler(
            m.kernel_layers, m.kernel_width, observation.scale
        )
        return self.model.downsampler

    def field(self) -> torch.Tensor:
        with self.autocast:
            return self.model.patch_mlp(self.features).float()

    def discriminator_step(self, field: torch.Tensor) -> torch.Tensor:
        fakes = field.detach()[self.targets.full].flatten(1)
        for _ in range(self.config.optim.d_steps):
            self.opt_d.zero_grad(set_to_none=True)
            d = self.model.discriminator
            loss = discriminator_loss(
                d(self.targets.real), d(fakes), self.config.loss.label_smoothing
            )
            loss.backward()
            self.opt_d.step()
        return loss.detach()

    def generator_step(self, field: torch.Tensor, step: int):
        pixels = self.model.pixels(field)
        d = self.model.discriminator
        fake_logits = d(field[self.targets.full]) if d is not None else None
        terms = generator_losses(
            field,
            pixels,
            fake_logits,
            self.targets,
            self.config.loss,
            self.config.model.patches,
            step,
            self.downsample,
        )
        if isinstance(self.downsample, LearnedDownsampler):
            loss = self.config.loss
            terms["kernel"] = self.downsample.sum_penalty()
            terms["kernel_spread"] = self.downsample.spread_penalty()
            terms["total"] = (
                terms["total"]
                + loss.kernel_sum * terms["kernel"]
                + loss.kernel_spread * terms["kernel_spread"]
            )
        _check_finite(step, terms)
        self.opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt_g.step()
        return terms, pixels.detach()

    def step(self, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        alternate = self.config.optim.schedule == "alternate"
        update_d = self.opt_d is not None and (not alternate or step % 2 == 0)
        update_g = not alternate or step % 2 == 1 or self.opt_d is None
        if update_g:
            field = self.field()
        else:
            with torch.no_grad():
                field = self.field()
        terms: dict[str, torch.Tensor] = {}
        if update_d:
            terms["discriminator"] = self.discriminator_step(field)
        pixels = None
        if update_g:
            g_terms, pixels = self.generator_step(field, step)
            terms.update(g_terms)
        return terms, pixels


def noise_floor(observation: Observation, config: Config) -> float | None:
    """The residual RMS at which a denoising fit stops (``optim.early_stop: noise``): the noise
    level estimated from the noisy image, which the clean image would sit at."""
    if config.optim.early_stop != "noise" or observation.task != "denoise":
        return None
    return estimate_noise(observation.image)


def _residual_rms(pixels: torch.Tensor, observed: torch.Tensor) -> float:
    return float((pixels.clamp(0, 1) - observed).pow(2).mean().sqrt())


def fit(
    observation: Observation,
    config: Config,
    *,
    seed: int = 0,
    on_step: StepCallback | None = None,
    ground_truth: np.ndarray | None = None,
    keep_known: bool = True,
) -> FitResult:
    """Fit one Knitwork (or the MLP baseline) to ``observation`` and restore it.

    ``on_step(step, metrics)`` is called every ``optim.log_every`` steps and after the last, with
    the loss terms (and ``psnr`` against ``ground_truth`` when given). For inpainting,
    ``keep_known`` pastes the observed pixels into the result; ``FitResult.raw`` never does.
    """
    trainer = Trainer(observation, config, seed)
    c = observation.image.shape[2]
    h, w = observation.output_shape
    history: list[dict[str, float]] = []
    steps, every = config.optim.steps, config.optim.log_every
    floor, stopped_at = noise_floor(observation, config), None
    if floor is not None:
        observed = torch.from_numpy(observation.image).reshape(h * w, c).to(trainer.device)
    start = time.perf_counter()
    for step in range(steps):
        terms, pixels = trainer.step(step)
        done = step + 1
        if floor is not None and pixels is not None and _residual_rms(pixels, observed) <= floor:
            stopped_at = done
        if done % every == 0 or done == steps or stopped_at:
            entry = {"step": float(done), **{k: float(v.detach()) for k, v in terms.items()}}
            if ground_truth is not None and pixels is not None and len(pixels) == h * w:
                current = pixels.clamp(0, 1).view(h, w, c).cpu().numpy()
                entry["psnr"] = psnr(current, ground_truth)
            history.append(entry)
            if on_step is not None:
                on_step(done, entry)
        if stopped_at:
            break
    seconds = time.perf_counter() - start
    model = trainer.model.cpu().eval()
    raw = model.render(h, w).clamp(0, 1).numpy()
    image = raw.copy()
    if keep_known and observation.task == "inpaint":
        image[observation.known] = observation.image[observation.known]
    return FitResult(
        image,
        raw,
        model,
        config,
        observation.task,
        seed,
        seconds,
        history,
        observation.scale,
        stopped_at,
    )


def finite_or_none(value: float | None) -> float | None:
    """JSON-friendly metric: None for missing or infinite values."""
    return None if value is None or not math.isfinite(value) else value
