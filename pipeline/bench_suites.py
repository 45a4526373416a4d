"""What the quality benchmark measures: its suites (settings of one task, or the paper's
ablation on a task's settings), each setting's degradation, and the methods each suite runs
(networks fitted by ``knitwork.fit``, Deep Image Prior on request, classical tools)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knitwork.ablation import ABLATION_STAGES, ablation_config, ablation_stages
from knitwork.classical import CLASSICAL
from knitwork.config import Config, as_baseline
from knitwork.degradation import RANDOM, Degradation

NEURAL = ("knitwork", "mlp")  # the task suites' networks
DIP = "dip"  # Deep Image Prior (knitwork.dip): inpaint and denoise, on request (--methods)
ABLATION = "ablation-"  # prefix of the ablation suites: ablation-inpaint, ablation-denoise
KERNEL_SCORES = ("kernel_error", "kernel_error_start")  # sr rows: None but for a learned kernel


@dataclass(frozen=True, kw_only=True)
class Setting:
    name: str  # the row's ``setting``: fill=0.02, sigma=20, x4/diagonal
    degradation: Degradation  # how the clean image is degraded (SR: the kernel is learned)


SR_KERNELS = ("delta", "round", "diagonal", "random")  # the SR suite's kernel kinds, in order


def sr_kernel(kind: str, scale: int) -> str:
    """The tables' SR kernels: delta, round Gaussian σ = r/2, diagonal σx 0.75·r, σy 0.3·r, 45°,
    and random: one seeded random anisotropic Gaussian per image (``Degradation.true_kernel``
    draws it from the image's seed, so a rerun degrades it identically)."""
    specs = {
        "delta": "delta",
        "round": f"gaussian:{scale / 2:g}",
        "diagonal": f"gaussian:{0.75 * scale:g},{0.3 * scale:g},45",
        "random": RANDOM,
    }
    return specs[kind]


def denoise_settings(sigmas: tuple[float, ...]) -> tuple[Setting, ...]:
    """White Gaussian noise of each std in ``sigmas`` (0–255 scale), named ``sigma=N``."""
    bad = [s for s in sigmas if not (np.isfinite(s) and s > 0)]
    if bad or not sigmas or len(set(sigmas)) < len(sigmas):
        raise ValueError(f"--sigmas must be distinct numbers > 0, e.g. 15,25,50; got {sigmas}")
    return tuple(
        Setting(name=f"sigma={s:g}", degradation=Degradation(task="denoise", sigma=float(s)))
        for s in sigmas
    )


# square holes of these fractions of the pixels (the paper's 1, 2, 4 %, and larger ones where
# local interpolation breaks down), then free-form holes (knitwork.masks): thin scratches and a
# text overlay, as photo restorers meet them
INPAINT_SQUARES = (0.01, 0.02, 0.04, 0.08, 0.16)
INPAINT_FREE_FORM = (("scratch", 0.03), ("text", 0.03))

_TASK_SUITES: dict[str, tuple[Setting, ...]] = {
    "inpaint": tuple(
        Setting(name=f"fill={f:g}", degradation=Degradation(task="inpaint", fill_ratio=f))
        for f in INPAINT_SQUARES
    )
    + tuple(
        Setting(
            name=f"{mask}={f:g}", degradation=Degradation(task="inpaint", fill_ratio=f, mask=mask)
        )
        for mask, f in INPAINT_FREE_FORM
    ),
    "denoise": denoise_settings((10, 20, 40)),
    "sr": tuple(
        Setting(
            name=f"x{r}/{k}",
            degradation=Degradation(task="sr", scale=r, degrade_kernel=sr_kernel(k, r)),
        )
        for r in (2, 4)
        for k in SR_KERNELS
    ),
}
# the paper's ablation (its Fig. 3) on the settings of a task suite: networks only
SUITES: dict[str, tuple[Setting, ...]] = _TASK_SUITES | {
    f"{ABLATION}{task}": _TASK_SUITES[task] for task in ("inpaint", "denoise")
}


def suite_task(suite: str) -> str:
    """The task a suite degrades for: inpaint, denoise or sr."""
    return suite.removeprefix(ABLATION)


def methods_of(suite: str) -> tuple[str, ...]:
    """The suite's methods in table order: the ablation's stages, or the Knitwork, DIP
    (inpainting and denoising), the MLP and the task's classical tools."""
    if suite.startswith(ABLATION):
        return ABLATION_STAGES
    dip = (DIP,) if suite in ("inpaint", "denoise") else ()
    return NEURAL[:1] + dip + NEURAL[1:] + tuple(m.name for m in CLASSICAL[suite])


def default_methods(suite: str, config: Config | None = None) -> tuple[str, ...]:
    """What a bench runs without --methods: every method but DIP (minutes per 64-px image on
    a CPU; ask for it by name); of an ablation, the stages that change the preset ``config``
    (``knitwork.ablation.ablation_stages``)."""
    if suite.startswith(ABLATION) and config is not None:
        return ablation_stages(config)
    return tuple(m for m in methods_of(suite) if m != DIP)


def alone(method: str) -> bool:
    """A method that gets a task of its own: a network (fitted) or DIP."""
    return is_neural(method) or method == DIP


def is_neural(method: str) -> bool:
    """A network fitted by ``knitwork.fit`` (the Knitwork, the MLP, an ablation stage)."""
    return method in ABLATION_STAGES


def neural_config(config: Config, method: str) -> Config:
    """A network's config from the Knitwork's: itself, the MLP's ``as_baseline``, or an
    ablation stage's (``knitwork.ablation``)."""
    if method in NEURAL:
        return config if method == "knitwork" else as_baseline(config)
    return ablation_config(config, method)
