"""Named presets in one registry, and their YAML round trip.

``paper-*`` follow the paper and the authors' code (a GPU budget: 4,000 full-grid steps).
``fast-*`` are CPU-friendly: 3×3 patches at scales 1, 2, 4, a small residual reconstructor and
a smaller discriminator, a few hundred steps. docs/presets.md explains every choice.

A YAML preset file holds a full config, or ``base: NAME`` plus the sections and fields to
change, e.g.::

    base: fast-inpaint
    loss: {alpha: 0.05}
    optim: {steps: 800}
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from knitwork.config import (
    TASKS,
    Config,
    EncodingConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PatchConfig,
)
from knitwork.io import atomic_file

# The authors' inpainting losses, rewritten for our mean reductions: their consistency sums
# 50 per-offset means (5×5 patches, 2 scales) and their reconstruction sums over RGB, so with
# the whole loss divided by 3 (Adam is invariant to that) α = 1e-5·50/3, β = 1/3, γ = 1e-4/3.
# β = 1/3 is their pixel weight 1 on their pixel loss, an MSE, so the pixel loss here is "mse"
# too (the paper's L1 is not a constant multiple of the MSE: no β would convert it).
_PAPER_INPAINT = Config(
    model=ModelConfig(
        patches=PatchConfig(size=5, scales=(1, 8), blur=True),
        reconstructor="linear",
    ),
    loss=LossConfig(
        alpha=1e-5 * 50 / 3,
        beta=1 / 3,
        gamma=1e-4 / 3,
        pixel="mse",
        label_smoothing=0.1,
        alpha_ramp="sigmoid",
        alpha_ramp_mid=1000,
        alpha_ramp_width=100.0,
    ),
    optim=OptimConfig(steps=4000, lr=4e-3, d_lr=4e-3, log_every=50),
)

# No denoising notebook is published: the paper's 3×3 patches, the authors' SR scales 1, 2, 4
# (27 offsets), their code's default learning rate, and the inpainting loss weights (β = 1/3
# on their MSE pixel loss, as in paper-inpaint).
_PAPER_DENOISE = Config(
    model=ModelConfig(patches=PatchConfig(size=3, scales=(1, 2, 4)), reconstructor="linear"),
    loss=LossConfig(alpha=1e-5 * 27 / 3, beta=1 / 3, gamma=1e-4 / 3, pixel="mse"),
    optim=OptimConfig(steps=4000, lr=1e-3, d_lr=1e-3, log_every=50),
)

_FAST_MODEL = ModelConfig(
    patches=PatchConfig(size=3, scales=(1, 2, 4), blur=True),
    reconstructor="mlp",
    reconstructor_width=64,
    reconstructor_depth=2,
    reconstructor_residual=True,
    discriminator_hidden=(128, 64, 32),
)

# A strong consistency weight is what carries structure into the hole (α 1e-2 → 3 gained 3-7 dB
# on 32-64 px examples made from Set5/Set14, before the tuning set existed), and a Fourier scale
# of 5 avoids the high-frequency noise that scale 10 paints there. The rest was chosen on the
# tuning set only (ten photos at 64 px, docs/benchmarks/inpaint.md): α 10 (+0.69 ± 0.33 dB on 2 %
# squares over α 3); then the hole pulled towards the biharmonic fill, the pull fading to 0
# half-way through the fit (inpaint_guide 1, inpaint_guide_fade 0.5), with the discriminator
# off (γ 0, a third faster). Against biharmonic that took the hole PSNR from +1.37 ± 1.08 /
# −0.27 ± 0.78 / +1.50 ± 1.35 / +1.08 ± 1.00 / +1.34 ± 0.55 dB (1/2/4/8/16 % squares) to
# +0.84 ± 0.36 / +0.31 ± 0.25 / +0.73 ± 0.22 / +0.23 ± 0.30 / +0.21 ± 0.07, and on scratches
# and text from −0.67 ± 0.44 / −0.88 ± 0.59 to −0.26 ± 0.32 / −0.25 ± 0.28: a smaller mean gain
# on large squares for fewer large failures (without the guide the worst photos lost 7.2 dB at
# 4 % and 6.1 dB at 2 %; with it the worst hole is −2.1 dB).
_FAST_INPAINT = Config(
    model=dataclasses.replace(_FAST_MODEL, encoding=EncodingConfig(scale=5.0)),
    loss=LossConfig(
        alpha=10.0, beta=1.0, gamma=0.0, pixel="l1", inpaint_guide=1.0, inpaint_guide_fade=0.5
    ),
    optim=OptimConfig(steps=500, lr=1e-3, d_lr=1e-3, log_every=10, precision="auto"),
)

# Tuned on the tuning set only (3-4 photos at 128 px, σ 25: docs/benchmarks/denoise.md). A low
# Fourier scale is the denoiser's prior (4 cycles across 128 px, counted per pixel so that it
# means the same at any size); the MSE pixel loss (the Gaussian noise's likelihood) gained
# +1.1-1.3 dB (paired) over L1; the held-out pixels stop the fit where their error bottoms out
# (the noise is fitted soon after: 100-900 steps in, depending on the image), so ``steps`` is
# only a cap; the averaged weights gained +0.13 ± 0.09 dB.
_FAST_DENOISE = Config(
    model=dataclasses.replace(_FAST_MODEL, encoding=EncodingConfig(scale=4 / 128, unit="pixel")),
    loss=LossConfig(alpha=1.0, beta=1.0, gamma=1e-3, pixel="mse"),
    optim=OptimConfig(
        steps=1000,
        lr=1e-3,
        d_lr=1e-3,
        log_every=10,
        precision="auto",
        early_stop="holdout",
        holdout=0.1,
        patience=50,
        ema=0.95,
    ),
)

# fast-denoise averaged over an ensemble of 4 fits (seeds, Fourier draws and held-out pixels
# differ), packed as one batched model. Measured on the tuning set only (3 photos at 128 px,
# σ 25: docs/benchmarks/denoise.md, "ensemble"): +0.18 ± 0.06 dB for K = 2 and +0.37 ± 0.09
# dB for K = 4 over one fit, every photo, at several times the seconds.
_QUALITY_DENOISE = _FAST_DENOISE.replace(optim=dataclasses.replace(_FAST_DENOISE.optim, ensemble=4))

# The authors' SR notebook: 3×3 patches at scales 1, 2, 4, consistency 1e-2 on a sum of 27
# per-offset means (our mean: 0.27), non-saturating GAN 1e-2, the downsampling MSE times the
# image height (≈ 100 here), alternating D/G steps. Divided by 100 (Adam does not see it).
# In SR β weighs the downsampling MSE, not a pixel loss; pixel="mse" only keeps every paper-*
# preset on the authors' pixel loss.
_PAPER_SR = Config(
    model=ModelConfig(patches=PatchConfig(size=3, scales=(1, 2, 4)), reconstructor="linear"),
    loss=LossConfig(alpha=2.7e-3, beta=1.0, gamma=1e-4, pixel="mse", kernel_sum=1.0),
    optim=OptimConfig(steps=4000, lr=1e-3, d_lr=1e-3, schedule="alternate", log_every=50),
)

# Blind SR from the kernel estimated before the fit (knitwork.kernel_estimation), with a
# Fourier scale per HR pixel (10 across 128 px, the 5 across 64 px the earlier preset had) and
# a consistency weight of 0.3: on the tuning photos at 128 px and 300 steps, α 3 (the earlier
# preset) left the field smoother than bicubic, α 0.3 with scale 10 gained 1.3-2.5 dB over it
# (docs/benchmarks/sr-kernels.md). The learned-kernel priors stay for blind_kernel: learn.
_FAST_SR = Config(
    model=dataclasses.replace(
        _FAST_MODEL,
        encoding=EncodingConfig(scale=10 / 128, unit="pixel"),
        blind_kernel="estimate",
    ),
    loss=LossConfig(alpha=0.3, beta=1.0, gamma=1e-3, pixel="l1", kernel_sum=1.0, kernel_spread=1.0),
    optim=OptimConfig(steps=300, lr=1e-3, d_lr=1e-3, log_every=10),
)

PRESETS: dict[str, Config] = {
    "paper-inpaint": _PAPER_INPAINT,
    "paper-denoise": _PAPER_DENOISE,
    "fast-inpaint": _FAST_INPAINT,
    "fast-denoise": _FAST_DENOISE,
    "quality-denoise": _QUALITY_DENOISE,
    "paper-sr": _PAPER_SR,
    "fast-sr": _FAST_SR,
}


def default_preset(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    return f"fast-{task}"


def get_preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_yaml(text: str, source: str = "<yaml>") -> Config:
    """A config from YAML text: a full config, or ``base: PRESET`` plus changes."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML ({err})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a preset must be a mapping of sections, not {type(data)}")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(get_preset(base).to_dict(), data)
    try:
        return Config.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def load_preset_file(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the preset file ({err.strerror})") from None
    return from_yaml(text, str(path))


def save_preset_file(config: Config, path: str | Path) -> None:
    with atomic_file(path) as handle:
        handle.write(to_yaml(config).encode("utf-8"))
