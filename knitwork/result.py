"""What a fit returns: the restored image, the model and its record (``FitResult``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from knitwork.config import Config
from knitwork.model import Knitwork, count_parameters


@dataclass(kw_only=True)
class FitResult:
    image: np.ndarray  # (H, W, C) restored image in [0, 1] (known pixels kept if asked)
    raw: np.ndarray  # (H, W, C) the reconstructor's output, clipped: the paper's protocol
    model: Knitwork  # trained model, on the CPU
    config: Config
    task: str
    seed: int
    seconds: float  # wall-clock time of the optimisation steps
    history: list[dict[str, float]] = field(default_factory=list)
    scale: int = 1  # super-resolution factor (the result is scale × the input's size)
    stopped_at: int | None = None  # the step an early stop ended the fit at, if it did
    crop: tuple[int, int] | None = None  # (height, width) of the sampled crops; None: full grid
    packed: int = 1  # images fitted together as one batched model; ``seconds`` is this one's share
    # held-out selection (``model.encoding.choices``): each candidate scale's best held-out
    # error; ``config`` is the chosen candidate's
    choices: dict[float, float] | None = None
    # an ensemble (``optim.ensemble``): how many fits the images average; ``model``, ``history``
    # and ``stopped_at`` are the first member's, ``seconds`` the whole ensemble's
    members: int = 1
    # blind SR with ``model.blind_kernel = "estimate"``: the kernel estimated before the fit
    # (the fit used it as a known kernel)
    kernel: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return self.stopped_at or self.config.optim.steps

    @property
    def parameters(self) -> int:
        """Trainable parameters of every network that was fitted (discriminator included)."""
        return count_parameters(self.model)


def finite_or_none(value: float | None) -> float | None:
    """JSON-friendly metric: None for missing or infinite values."""
    return None if value is None or not math.isfinite(value) else value
