"""Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018), the paper's CNN baseline, run here.

DIP fits a randomly initialised convolutional hourglass ``f(z)`` from a fixed input ``z`` to the
degraded image, with the loss on what was observed, and stops early: the network's structure is
the prior. This module runs it on the same ``Observation`` the Knitwork fits, for inpainting and
denoising, with the settings DIP's public notebooks publish (``dip_config``).

Why it is written here and not taken from a library: DeepInverse 0.5.0 (the maintained library
that ships a ``DeepImagePrior``) drives a ``ConvDecoder`` (Darestani & Heckel 2021: upsample +
conv + ReLU + BatchNorm, no encoder, no skips, Gaussian input) with plain Adam; it has no
encoder-decoder "skip" hourglass, no input-noise perturbation, no output averaging and no
backtracking, and takes no seed. Running it would not be "DIP with its standard network and
schedule", and it would add torchvision, torchmetrics, einops, h5py and natsort to our
dependencies. So the hourglass below is written from the paper's description and the facts
(layer order, widths, schedules) of its public code.

The network (``Hourglass``), per level i = 0..levels-1, on the level's input x_i:
    down_i:  reflect-pad, 3×3 conv stride 2 → BN → LeakyReLU(0.2) → reflect-pad, 3×3 conv → BN
             → LeakyReLU; its output is x_{i+1}
    skip_i:  1×1 conv of x_i to ``skip_channels`` → BN → LeakyReLU (absent when 0)
    up_i:    upsample ×2 (the deeper level's output) → concat [skip_i, that] → BN → reflect-pad,
             3×3 conv → BN → LeakyReLU → 1×1 conv → BN → LeakyReLU
and a 1×1 conv to the image's channels and a sigmoid on top. BatchNorm stays in training mode
throughout (batch statistics, as DIP's notebooks run it).

Sizes: the network works on a canvas whose sides are multiples of 2^levels (and at least
2^(levels+1), so that the deepest 3×3 conv has a 2×2 map to reflect); the canvas is centred on
the image and the output is cropped back to H×W. The margin is not in the loss. (DIP's
notebooks crop the image instead, losing its border; we keep every pixel.)

Seeding: weights, the input and the per-step input perturbation come from generators seeded from
``seed`` inside ``fit_dip``; nothing process-wide (torch's global RNG, its thread count) is
touched, so the same seed on the same CPU thread count gives the same result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from knitwork.tasks import Observation

ProgressCallback = Callable[[int, dict[str, float]], None]

FLOAT = 4  # bytes per value
# Activation values autograd keeps per canvas pixel and unit of width, summed over the levels
# (each level's up path at its resolution, its down path at a quarter of it, 4^-i per level).
# Measured (denoise preset, one CPU thread): peak resident memory grew by 9.3 KB per canvas
# pixel from 192² to 320²; this estimates 12.8 KB. The runtime's own ~0.4 GiB is not counted.
VALUES_PER_WIDTH = 24
DEFAULT_MEMORY_BUDGET = 8 * 2**30  # bytes of activations a fit may plan for


@dataclass(frozen=True, kw_only=True)
class DipConfig:
    """One DIP run's settings (the seed is an argument of ``fit_dip``, not a setting)."""

    channels: int = 128  # width of every level, down and up path ("skip_n33d/u")
    levels: int = 5  # down/up scales ("num_scales")
    skip_channels: int = 4  # width of each skip connection ("skip_n11"); 0 = plain hourglass
    input_channels: int = 32  # channels of the fixed input z ("input_depth")
    input_kind: str = "noise"  # "noise": U(0, 1)·input_scale; "meshgrid": (x, y) in [0, 1]
    input_scale: float = 0.1  # noise input: its amplitude (DIP's get_noise var = 1/10)
    upsample: str = "bilinear"  # "bilinear" or "nearest"
    lr: float = 0.01  # Adam, default betas
    steps: int = 3000  # iterations; DIP stops early by this count, not by a criterion
    reg_noise: float = 1 / 30  # std of fresh Gaussian noise added to z at every step
    ema: float = 0.99  # the result is this exponential average of the outputs; 0 = last output
    backtrack_db: float = 5.0  # undo a step whose fit to the observation drops by more (0 = off)

    def __post_init__(self) -> None:
        if self.input_kind not in ("noise", "meshgrid"):
            raise ValueError(f"input_kind must be noise or meshgrid; got {self.input_kind!r}")
        if self.input_kind == "meshgrid" and self.input_channels != 2:
            raise ValueError("a meshgrid input has 2 channels (x, y)")
        if self.upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be bilinear or nearest; got {self.upsample!r}")
        if self.levels < 1 or self.channels < 1 or self.skip_channels < 0 or self.steps < 1:
            raise ValueError("levels, channels and steps must be ≥ 1, skip_channels ≥ 0")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1); got {self.ema}")

    def describe(self, steps: int | None = None) -> str:
        """What a results row names, e.g. "DIP 5×128 skip 4, noise 32 in, bilinear, 3000 steps,
        lr 0.01, reg 0.033, EMA 0.99, backtrack 5 dB"."""
        steps = steps or self.steps
        parts = [
            f"DIP {self.levels}×{self.channels} skip {self.skip_channels}",
            f"{self.input_kind} {self.input_channels} in",
            self.upsample,
            f"{steps} step{'s' * (steps != 1)}",
            f"lr {self.lr:g}",
            f"reg {self.reg_noise:.2g}",
        ]
        if self.ema:
            parts.append(f"EMA {self.ema:g}")
        if self.backtrack_db:
            parts.append(f"backtrack {self.backtrack_db:g} dB")
        return ", ".join(parts)


# DIP's public notebooks, one setting per task:
# - inpainting: the region-inpainting setting (inpainting.ipynb, vase.png: one large hole, like
#   our square holes): 5×128, no skips, nearest upsampling, a 2-channel meshgrid input,
#   reg noise 0.03, 5,001 iterations at 512 px. (Its text-inpainting setting, kate.png, differs:
#   noise input 32, 128-channel skips, 6,001 iterations: replace() these fields to run it.)
# - denoising: denoising.ipynb, F16_GT.png: 5×128, 4-channel skips, bilinear, noise input 32,
#   reg noise 1/30, 3,000 iterations, EMA 0.99 of the outputs, backtracking when the PSNR to
#   the noisy image drops by more than 5 dB. (Its snail.jpg setting is a smaller net, 2,400
#   iterations.)
DIP_PRESETS: dict[str, DipConfig] = {
    "inpaint": DipConfig(
        skip_channels=0,
        input_channels=2,
        input_kind="meshgrid",
        upsample="nearest",
        steps=5000,
        reg_noise=0.03,
        ema=0.0,
        backtrack_db=0.0,
    ),
    "denoise": DipConfig(),
}


def dip_config(task: str, steps: int | None = None) -> DipConfig:
    """DIP's published setting for ``task`` ("inpaint" or "denoise"), optionally with another
    number of steps (DIP's counts are for 512 px images)."""
    if task not in DIP_PRESETS:
        raise ValueError(f"DIP runs inpaint or denoise; got {task!r}")
    config = DIP_PRESETS[task]
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    return config


@dataclass(frozen=True, eq=False, kw_only=True)
class DipResult:
    image: np.ndarray  # (H, W, C) float32 in [0, 1]; inpainting: observed pixels pasted back
    raw: np.ndarray  # (H, W, C) float32: the estimate as the network drew it, nothing pasted
    seconds: float  # wall time of the fit
    steps: int  # optimisation steps taken
    parameters: int  # the network's trainable parameters
    params: str  # the settings, for a results row
    config: DipConfig  # everything that made it (``dataclasses.asdict`` for a tracker)
    backtracks: int = 0  # steps undone by backtracking


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride)
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), conv) if kernel > 1 else conv


def _unit(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """conv → BatchNorm → LeakyReLU(0.2)."""
    return [_conv(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]


class Hourglass(nn.Module):
    """DIP's encoder-decoder ("skip" network): see the module docstring for one level."""

    def __init__(self, config: DipConfig, out_channels: int) -> None:
        super().__init__()
        width, skip, levels = config.channels, config.skip_channels, config.levels
        ins = [config.input_channels] + [width] * (levels - 1)
        self.upsample = config.upsample
        self.down = nn.ModuleList(
            nn.Sequential(*_unit(c, width, 3, stride=2), *_unit(width, width, 3)) for c in ins
        )
        self.skip = nn.ModuleList(nn.Sequential(*_unit(c, skip, 1)) for c in ins if skip)
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(skip + width),
                *_unit(skip + width, width, 3),
                *_unit(width, width, 1),
            )
            for _ in ins
        )
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        inputs = [z]
        for down in self.down:
            inputs.append(down(inputs[-1]))
        x = inputs.pop()
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, scale_factor=2, mode=self.upsample)
            if self.skip:
                x = torch.cat([self.skip[i](inputs[i]), x], dim=1)
            x = self.up[i](x)
        return torch.sigmoid(self.head(x))


def build_hourglass(config: DipConfig, out_channels: int, generator: torch.Generator) -> Hourglass:
    """The network with PyTorch's default initialisation drawn from ``generator`` (built on the
    meta device first, so torch's global RNG is never drawn from)."""
    with torch.device("meta"):
        net = Hourglass(config, out_channels)
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(module.weight[0].numel())
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
    return net


def parameter_count(config: DipConfig, out_channels: int = 3) -> int:
    """Trainable parameters of the network for an image with ``out_channels`` channels."""
    with torch.device("meta"):
        net = Hourglass(config, out_channels)
    return sum(p.numel() for p in net.parameters())


def canvas_size(height: int, width: int, levels: int) -> tuple[int, int]:
    """The network's working size: each side rounded up to a multiple of 2^levels, at least
    2^(levels+1)."""
    step = 2**levels
    rows, cols = (max(-(-side // step) * step, 2 * step) for side in (height, width))
    return rows, cols


def memory_estimate(height: int, width: int, config: DipConfig) -> int:
    """Bytes of activations one step keeps for backward on an H×W image (an upper bound)."""
    rows, cols = canvas_size(height, width, config.levels)
    return rows * cols * _bytes_per_pixel(config)


def _bytes_per_pixel(config: DipConfig) -> int:
    width = config.channels + config.skip_channels
    return (VALUES_PER_WIDTH * width + config.input_channels) * FLOAT


def check_memory(height: int, width: int, config: DipConfig, budget: int) -> None:
    """Refuse, before allocating anything, an image whose DIP step would exceed ``budget``."""
    need = memory_estimate(height, width, config)
    if need <= budget:
        return
    side = math.isqrt(budget // _bytes_per_pixel(config))
    raise ValueError(
        f"DIP on a {width}×{height} image needs about {need / 2**30:.1f} GiB of activations per "
        f"step, over the {budget / 2**30:.1f} GiB budget: downscale it to about {side}×{side} "
        f"({side * side / 1e6:.2g} MP) or less, use fewer channels than {config.channels}, "
        "or raise memory_budget"
    )


def network_input(
    config: DipConfig, rows: int, cols: int, generator: torch.Generator
) -> torch.Tensor:
    """DIP's fixed input z, (1, input_channels, rows, cols)."""
    if config.input_kind == "meshgrid":
        y, x = torch.meshgrid(torch.linspace(0, 1, rows), torch.linspace(0, 1, cols), indexing="ij")
        return torch.stack([x, y])[None]
    shape = (1, config.input_channels, rows, cols)
    return torch.rand(shape, generator=generator) * config.input_scale


def fit_dip(
    observation: Observation,
    config: DipConfig,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    *,
    ground_truth: np.ndarray | None = None,
    log_every: int = 50,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "cpu",
) -> DipResult:
    """Fit DIP to ``observation`` (inpaint or denoise) and restore it.

    The loss is the MSE to the observed image over known pixels (inpainting: outside the hole;
    denoising: all of them). ``progress(step, metrics)`` is called every ``log_every`` steps and
    after the last with ``total`` (the loss) and, given ``ground_truth``, ``psnr`` of the current
    estimate (``raw``, whole image). Raises ValueError for super-resolution and for an image
    over ``memory_budget`` (before allocating anything)."""
    if observation.task not in DIP_PRESETS:
        raise ValueError(f"DIP runs inpaint or denoise; got task {observation.task!r}")
    height, width, channels = observation.image.shape
    check_memory(height, width, config, memory_budget)
    start = time.perf_counter()
    init = torch.Generator().manual_seed(seed)
    net = build_hourglass(config, channels, init).to(device)
    rows, cols = canvas_size(height, width, config.levels)
    z = network_input(config, rows, cols, init).to(device)
    jitter = torch.Generator(device=device).manual_seed(seed + 1)
    top, left = (rows - height) // 2, (cols - width) // 2
    crop = (slice(None), slice(None), slice(top, top + height), slice(left, left + width))
    observed = np.where(observation.known[:, :, None], observation.image, 0)  # hole: ignored
    target = _to_tensor(observed, device)
    known = torch.from_numpy(observation.known).to(device)[None, None].float()
    truth = None if ground_truth is None else _to_tensor(ground_truth, device)
    loop = _Loop(net, config, target, known, crop)
    for step in range(1, config.steps + 1):
        z_step = z
        if config.reg_noise:  # DIP's input perturbation, fresh at every step
            z_step = z + config.reg_noise * torch.randn(z.shape, generator=jitter, device=device)
        loss = loop.step(z_step)
        if progress is not None and (step % log_every == 0 or step == config.steps):
            metrics = {"total": loss}
            if truth is not None:
                metrics["psnr"] = _psnr(loop.estimate(z), truth)
            progress(step, metrics)
    raw = loop.estimate(z)[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
    image = raw
    if observation.task == "inpaint":
        image = np.where(observation.known[:, :, None], observation.image, raw)
    return DipResult(
        image=np.clip(image, 0, 1).astype(np.float32),
        raw=raw,
        seconds=time.perf_counter() - start,
        steps=config.steps,
        parameters=sum(p.numel() for p in net.parameters()),
        params=config.describe(),
        config=config,
        backtracks=loop.backtracks,
    )


class _Loop:
    """One DIP optimisation: Adam steps, the output average and backtracking."""

    def __init__(
        self,
        net: Hourglass,
        config: DipConfig,
        target: torch.Tensor,  # (1, C, H, W) the observed image
        known: torch.Tensor,  # (1, 1, H, W) 1 where observed
        crop: tuple[slice, ...],  # the image's place on the network's canvas
    ) -> None:
        self.net, self.config, self.target, self.known, self.crop = net, config, target, known, crop
        self.weight = known.sum() * target.shape[1]
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        self.average: torch.Tensor | None = None
        self.saved = [p.detach().clone() for p in net.parameters()] if config.backtrack_db else []
        self.last_psnr: float | None = None
        self.backtracks = 0

    def step(self, z: torch.Tensor) -> float:
        output = self.net(z)[self.crop]
        loss = ((output - self.target) ** 2 * self.known).sum() / self.weight
        value = loss.item()
        if self.config.backtrack_db:
            psnr = -10 * math.log10(max(value, 1e-12))
            if self.last_psnr is not None and psnr < self.last_psnr - self.config.backtrack_db:
                with torch.no_grad():  # DIP's "falling back to previous checkpoint"
                    for param, saved in zip(self.net.parameters(), self.saved, strict=True):
                        param.copy_(saved)
                self.backtracks += 1
                return value
            with torch.no_grad():
                for param, saved in zip(self.net.parameters(), self.saved, strict=True):
                    saved.copy_(param)
            self.last_psnr = psnr
        if self.config.ema:
            out = output.detach()
            ema = self.config.ema
            self.average = (
                out.clone() if self.average is None else self.average * ema + out * (1 - ema)
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def estimate(self, z: torch.Tensor) -> torch.Tensor:
        """The current restoration, (1, C, H, W): the output average, or the network's output
        for the unperturbed input."""
        if self.average is not None:
            return self.average.clamp(0, 1)
        with torch.no_grad():
            return self.net(z)[self.crop]


def _to_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None].to(device)


def _psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    mse = float(((estimate - truth) ** 2).mean())
    return -10 * math.log10(max(mse, 1e-12))
