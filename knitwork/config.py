"""Configuration: frozen dataclasses, one per concern, that flatten into dicts and YAML.

Every field carries a comment saying what it is and, where the paper and the authors' code
disagree, which choice the field encodes. Presets (``knitwork.presets``) are instances of
``Config``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from knitwork.fields import Checked, check_device, parse_size

Task = Literal["inpaint", "denoise", "sr"]
TASKS: tuple[str, ...] = typing.get_args(Task)
Method = Literal["knitwork", "mlp"]
ReconstructorKind = Literal["linear", "mlp", "none"]
PixelLoss = Literal["l1", "mse"]
Ramp = Literal["none", "sigmoid"]
Schedule = Literal["joint", "alternate"]
Precision = Literal["fp32", "bf16", "auto"]
EarlyStop = Literal["none", "noise", "holdout"]
LrDecay = Literal["none", "cosine"]
BlindKernel = Literal["learn", "estimate"]


@dataclass(frozen=True, kw_only=True)
class EncodingConfig(Checked):
    SECTION: ClassVar[str] = "model.encoding"

    features: int = 256  # random Fourier frequencies; the MLP input has 2 × features values
    scale: float = 10.0  # std of the Gaussian frequency matrix B (authors: 10)
    # what ``scale`` counts: "image" (cycles across the image, the paper's; the same scale
    # is smoother on a larger image) or "pixel" (cycles per pixel of the longest side, so a
    # preset behaves the same at 64 px and at 481 px)
    unit: Literal["image", "pixel"] = "image"
    # > 1: each frequency row's std is drawn log-uniformly in [scale / spread, scale · spread]
    # (several bands at once, for images that mix smooth areas and texture); 1: all at scale
    spread: float = 1.0
    # held-out selection (needs optim.early_stop: holdout): one fit per scale listed here,
    # packed, and the result is the one whose held-out pixels end with the lowest error
    # (``knitwork.packs.fit_selected``); empty: one fit at ``scale``
    choices: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PatchConfig(Checked):
    SECTION: ClassVar[str] = "model.patches"

    size: int = 3  # P: each scale predicts a P×P patch (odd; paper 3, authors' inpainting 5)
    scales: tuple[int, ...] = (1, 2, 4)  # dilation of each patch level; the first must be 1
    blur: bool = True  # Gaussian pre-blur at scales > 1: σ = scale, radius scale − 1 (authors)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Checked):
    SECTION: ClassVar[str] = "model"

    method: Method = "knitwork"  # "knitwork", or "mlp": the conventional coordinate-MLP baseline
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    hidden: int = 256  # width of the patch MLP (paper: 256)
    layers: int = 4  # linear layers of the patch MLP, output layer included (paper: 4)
    # "linear": the authors' deep linear net + sigmoid; "mlp": ReLU layers; "none": centre pixel
    reconstructor: ReconstructorKind = "linear"
    reconstructor_width: int = 8  # hidden width of the reconstructor (authors: 8)
    reconstructor_depth: int = 8  # linear layers of the reconstructor (authors: 8)
    reconstructor_residual: bool = False  # add the net's output to the centre element's logit,
    # last layer zero-initialised: starts as "take the centre pixel" and learns corrections
    # rendering: False draws the reconstructor's colour; True draws each pixel as the mean of
    # the finest-scale predictions of every P×P patch that covers it (its own and its
    # neighbours': the aggregation of patch-based denoisers; the reconstructor is then unused)
    aggregate: bool = False
    discriminator_hidden: tuple[int, ...] = (256, 256, 128, 64, 32, 16)  # LeakyReLU(0.2) layers
    kernel_layers: tuple[int, ...] = (7, 5, 3, 1, 1, 1)  # SR learned kernel: conv sizes (KernelGAN)
    kernel_width: int = 64  # SR learned kernel: channels of the deep linear conv stack
    # blind SR: "learn" the kernel with the image (a deep linear stack from a delta start, as
    # the paper), or "estimate" it from the LR image's spectrum first and fit the image with
    # it as a known kernel (knitwork.kernel_estimation)
    blind_kernel: BlindKernel = "learn"


@dataclass(frozen=True, kw_only=True)
class LossConfig(Checked):
    SECTION: ClassVar[str] = "loss"

    alpha: float = 1e-2  # weight of the cross-patch consistency loss (eq. 2)
    beta: float = 1.0  # weight of the reconstructed-pixel loss (eq. 3)
    gamma: float = 1e-3  # weight of the generator's GAN loss; 0 switches the discriminator off
    pixel: PixelLoss = "l1"  # pixel loss: "l1" (paper) or "mse" (authors' code)
    kernel_sum: float = 1.0  # SR, learned kernel: weight of the (Σk − 1)² penalty
    kernel_spread: float = 0.0  # SR, learned kernel: weight of Σ|k|·d²/R² (compactness)
    label_smoothing: float = 0.1  # one-sided: real patches get the label 1 − this (paper: 0.1)
    # denoising: take the discriminator's real patches from the noisy image blurred by a
    # Gaussian of this σ in pixels (pre-smoothed), not from the noisy image (0: as the paper)
    real_blur: float = 0.0
    # SR (Knitwork): a pixel loss (``pixel``) to the bicubic upsampling of the LR image, weighted
    # sr_guide at step 0 and fading linearly to 0 at step sr_guide_steps: a warm start that
    # keeps the first steps near bicubic where the LR image does not decide (KernelGAN's
    # bicubic loss, here for the image). 0: off
    sr_guide: float = 0.0
    sr_guide_steps: int = 100
    # inpainting (Knitwork): a pixel loss (``pixel``) on the hole's pixels to the biharmonic
    # fill of the observation (the classical fill as a prior the patches refine), weighted
    # inpaint_guide at step 0 and fading linearly to 0 once inpaint_guide_fade × optim.steps
    # steps are done (a fraction of the fit, so that --steps keeps its shape; 0: it never
    # fades). 0: off
    inpaint_guide: float = 0.0
    inpaint_guide_fade: float = 0.0
    alpha_ramp: Ramp = "none"  # "none", or "sigmoid": α·sigmoid((step − mid) / width)
    alpha_ramp_mid: int = 1000  # step at which the sigmoid ramp reaches α/2 (authors: 1000)
    alpha_ramp_width: float = 100.0  # steps per unit of the sigmoid's argument


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Checked):
    SECTION: ClassVar[str] = "optim"

    steps: int = 1000  # full-grid iterations
    lr: float = 1e-3  # Adam learning rate of the patch MLP and the reconstructor
    d_lr: float = 1e-3  # Adam learning rate of the discriminator
    d_steps: int = 1  # discriminator updates per iteration that updates it
    # learning-rate schedule of both optimisers: "none" (constant), or "cosine" from lr to
    # lr · lr_floor over the steps (``lr_at``)
    lr_decay: LrDecay = "none"
    lr_floor: float = 0.1
    # exponential moving average of the generator's weights (patch MLP, reconstructor) with
    # this decay per step, warmed up as min(ema, (1 + t) / (10 + t)); the result is drawn with
    # the averaged weights (Polyak averaging; Deep Image Prior averages its outputs). 0: off
    ema: float = 0.0
    schedule: Schedule = "joint"  # "joint": D then G every step; "alternate": D even, G odd
    # "fp32"; "bf16" (the patch MLP under autocast); "auto": bf16 where the device multiplies
    # it fast (CUDA with bf16, CPUs with AVX-512 BF16 or AMX), else fp32
    precision: Precision = "fp32"
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    log_every: int = 10  # steps between history entries and on_step calls
    # "noise" (denoising): stop once the output is no closer to the noisy input than the noise
    # level estimated from it (the discrepancy principle); "holdout" (denoising): leave a
    # random ``holdout`` fraction of the pixels out of every loss and stop once their error
    # has not improved for ``patience`` steps (self-validation; σ need not be known);
    # "none": run every step
    early_stop: EarlyStop = "none"
    holdout: float = 0.1  # early_stop "holdout": fraction of pixels held out
    patience: int = 100  # early_stop "holdout": steps without a new best held-out error
    # early_stop "holdout": draw the result with the weights (averaged, under ``ema``) of the
    # step whose held-out error was lowest, not those it stopped with ``patience`` steps later
    keep_best: bool = False
    # an ensemble: this many fits with seeds seed, seed + 1, … (weights, Fourier draws and
    # held-out pixels differ), packed as one batched model, the result the mean of their
    # images (knitwork.packs.fit_ensemble). 1: one fit
    ensemble: int = 1
    # peak memory a fit may use: a size (4G, 512M) or "auto" (80 % of what is free when it
    # starts); full-grid steps when they fit, else sampled crops (knitwork.memory)
    max_memory: str = "auto"
    crop_size: int = 0  # side of the sampled square crops; 0: from max_memory (full grid if
    # it fits). Inpainting and denoising only.

    def __post_init__(self) -> None:
        super().__post_init__()
        check_device(self.device)
        if not 0 < self.holdout < 1:
            raise ValueError(f"optim.holdout must be in (0, 1); got {self.holdout}")
        if self.patience < 1:
            raise ValueError(f"optim.patience must be ≥ 1; got {self.patience}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"optim.ema must be in [0, 1) (0: off); got {self.ema}")
        if self.ensemble < 1:
            raise ValueError(f"optim.ensemble must be ≥ 1 (1: one fit); got {self.ensemble}")
        if not 0 <= self.lr_floor <= 1:
            raise ValueError(f"optim.lr_floor must be in [0, 1]; got {self.lr_floor}")

    def lr_factor(self, step: int) -> float:
        """The learning rates' multiplier at ``step`` (0-based): 1, or the cosine decay."""
        if self.lr_decay == "none" or self.steps <= 1:
            return 1.0
        t = min(step, self.steps - 1) / (self.steps - 1)
        return self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True, kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """``to_dict`` without the fields that hold their default value, at any depth: what
        result hashes are taken on, so that a field added later, whose default keeps the old
        behaviour, leaves every earlier hash (and every resumable result) as it was."""
        return _changed(self.to_dict(), Config().to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return _build(cls, data, "config")

    def replace(self, **sections: Any) -> Config:
        """Return a copy with whole sections replaced, e.g. ``cfg.replace(optim=...)``."""
        return dataclasses.replace(self, **sections)

    def with_steps(self, steps: int) -> Config:
        return self.replace(optim=dataclasses.replace(self.optim, steps=steps))

    def with_device(self, device: str) -> Config:
        return self.replace(optim=dataclasses.replace(self.optim, device=device))


def as_baseline(config: Config) -> Config:
    """The conventional coordinate MLP (the paper's "MLP" column) on the same encoding and budget.

    One pixel per coordinate (1×1 patch, one scale), no reconstructor, consistency or GAN: its
    only loss is the masked MSE of the patch-reconstruction term on the known pixels.
    """
    model = dataclasses.replace(
        config.model,
        method="mlp",
        patches=PatchConfig(size=1, scales=(1,), blur=False),
        reconstructor="none",
    )
    loss = dataclasses.replace(
        config.loss,
        alpha=0.0,
        beta=0.0,
        gamma=0.0,
        alpha_ramp="none",
        inpaint_guide=0.0,
        inpaint_guide_fade=0.0,
    )
    return config.replace(model=model, loss=loss)


def _changed(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    changed = {}
    for key, value in values.items():
        default = defaults.get(key, _NO_DEFAULT)
        if isinstance(value, dict) and isinstance(default, dict):
            inner = _changed(value, default)
            if inner:
                changed[key] = inner
        elif value != default:
            changed[key] = value
    return changed


_NO_DEFAULT = object()


def validate(config: Config) -> None:
    """Raise ValueError naming the field when a configuration cannot work."""
    m, lo, o = config.model, config.loss, config.optim
    p = m.patches
    if p.size < 1 or p.size % 2 == 0:
        raise ValueError(f"model.patches.size must be a positive odd number; got {p.size}")
    if not p.scales or p.scales[0] != 1 or any(s < 1 for s in p.scales):
        raise ValueError(f"model.patches.scales must start with 1 and be ≥ 1; got {p.scales}")
    if len(set(p.scales)) != len(p.scales):
        raise ValueError(f"model.patches.scales must not repeat; got {p.scales}")
    if m.method == "mlp" and (p.size != 1 or len(p.scales) != 1 or m.reconstructor != "none"):
        raise ValueError("model.method 'mlp' needs 1×1 patches at one scale and no reconstructor")
    if m.encoding.scale <= 0 or m.encoding.spread < 1:
        raise ValueError(
            "model.encoding.scale must be > 0 and model.encoding.spread ≥ 1; got "
            f"{m.encoding.scale} and {m.encoding.spread}"
        )
    if config.loss.real_blur < 0:
        raise ValueError(f"loss.real_blur must be ≥ 0 (0: off); got {config.loss.real_blur}")
    if o.keep_best and o.early_stop != "holdout":
        raise ValueError(
            "optim.keep_best needs optim.early_stop: holdout (the held-out pixels say which step "
            f"was best); got early_stop {o.early_stop}"
        )
    if m.encoding.choices and (o.early_stop != "holdout" or min(m.encoding.choices) <= 0):
        raise ValueError(
            "model.encoding.choices needs optim.early_stop: holdout (the held-out pixels choose) "
            f"and scales > 0; got {m.encoding.choices} with early_stop {o.early_stop}"
        )
    if m.encoding.choices and o.ensemble > 1:
        raise ValueError(
            "model.encoding.choices and optim.ensemble > 1 cannot be combined: choose a scale "
            "by held-out selection or average an ensemble, not both"
        )
    if m.encoding.features < 1 or m.hidden < 1 or m.layers < 2:
        raise ValueError("model.encoding.features, model.hidden ≥ 1 and model.layers ≥ 2 needed")
    if m.reconstructor != "none" and m.reconstructor_depth < 1:
        raise ValueError("model.reconstructor_depth must be ≥ 1")
    if lo.sr_guide_steps < 1:
        raise ValueError(f"loss.sr_guide_steps must be ≥ 1; got {lo.sr_guide_steps}")
    for name in (
        "alpha",
        "beta",
        "gamma",
        "label_smoothing",
        "kernel_sum",
        "kernel_spread",
        "sr_guide",
        "inpaint_guide",
        "inpaint_guide_fade",
    ):
        if getattr(lo, name) < 0:
            raise ValueError(f"loss.{name} must be ≥ 0; got {getattr(lo, name)}")
    if lo.alpha_ramp == "sigmoid" and lo.alpha_ramp_width <= 0:
        raise ValueError(
            f"loss.alpha_ramp_width must be > 0 with the sigmoid ramp; got {lo.alpha_ramp_width}"
        )
    if lo.label_smoothing >= 1:
        raise ValueError("loss.label_smoothing must be below 1")
    if lo.beta > 0 and m.reconstructor == "none":
        raise ValueError("loss.beta > 0 needs a reconstructor (model.reconstructor is 'none')")
    if o.max_memory != "auto":
        parse_size(o.max_memory)  # a bad size fails here, naming itself
    if o.crop_size < 0:
        raise ValueError(f"optim.crop_size must be ≥ 0; got {o.crop_size}")
    if o.steps < 0 or o.lr <= 0 or o.d_lr <= 0 or o.d_steps < 1 or o.log_every < 1:
        raise ValueError("optim: steps ≥ 0, lr > 0, d_lr > 0, d_steps ≥ 1, log_every ≥ 1 needed")


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys by their full name."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        sub = fields[name].type
        sub_cls = _NESTED.get(sub) if isinstance(sub, str) else None
        if sub_cls is not None:
            kwargs[name] = _build(sub_cls, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_NESTED = {
    "EncodingConfig": EncodingConfig,
    "PatchConfig": PatchConfig,
    "ModelConfig": ModelConfig,
    "LossConfig": LossConfig,
    "OptimConfig": OptimConfig,
}
