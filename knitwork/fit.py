"""The one core call: fit a Knitwork (or the MLP baseline) to an observation and restore it.

``fit`` is a thin loop over ``knitwork.trainer.Trainer``, which owns stepping, the stop rule
and the result; Tune trials and packed fits step the same Trainer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from knitwork.config import Config
from knitwork.packs import fit_one, packs_itself
from knitwork.result import FitResult
from knitwork.tasks import Observation
from knitwork.trainer import Trainer

StepCallback = Callable[[int, dict[str, float]], None]


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
    if packs_itself(config):  # held-out selection or an ensemble: several packed fits
        result = fit_one(
            observation, config, seed=seed, ground_truth=ground_truth, keep_known=keep_known
        )
        for entry in result.history if on_step is not None else ():  # the chosen/first fit's
            on_step(int(entry["step"]), entry)
        return result
    trainer = Trainer(observation, config, seed=seed, ground_truth=ground_truth)
    while not trainer.finished:
        entry = trainer.step()
        if entry is not None and on_step is not None:
            on_step(trainer.steps_done, entry)
    return trainer.result(keep_known)
