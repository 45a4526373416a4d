"""One trial of a search, as a Ray Tune function trainable.

A trial fits every image of the objective with the same config, stepping their trainers
round-robin, and every ``report_every`` steps reports the running objective (mean PSNR, hole
PSNR for inpainting) with a checkpoint: the trainers' states and the images restored so far.
ASHA compares trials at those reports and stops the poor ones; a resumed trial continues from
its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from knitwork.config import Config
from knitwork.fit import NonFiniteLossError, Trainer
from knitwork.metrics import psnr
from knitwork.tasks import Observation
from tune.space import apply_params

STATE_FILE = "trainers.pt"
RESTORED_DIR = "restored"  # restored images in a checkpoint: restored/<name>.png
DIVERGED_OBJECTIVE = 0.0  # the objective reported when a loss becomes non-finite (dB)


@dataclass(frozen=True)
class Case:
    """One clean image of the objective, degraded with its own seed."""

    name: str  # relative name under --images
    observation: Observation
    truth: np.ndarray  # the clean image the restoration is scored against
    seed: int


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares: the base config, the images, the reporting cadence."""

    task: str
    base: Config
    cases: tuple[Case, ...]
    report_every: int
    threads: int = 1
    use_gpu: bool = False


def objective_label(task: str) -> str:
    return "mean hole PSNR (dB)" if task == "inpaint" else "mean PSNR (dB)"


def metric_name(name: str) -> str:
    """An MLflow- and Tune-safe metric key for an image: ``psnr/<name>``."""
    return "psnr/" + re.sub(r"[^0-9A-Za-z_\-./ ]", "_", name)


def trial_config(setup: TrialSetup, params: dict[str, Any]) -> Config:
    """The base config with the trial's values; on CPUs when the trial has no GPU."""
    config = apply_params(setup.base, params)
    if not setup.use_gpu and config.optim.device == "auto":
        config = config.replace(optim=dataclasses.replace(config.optim, device="cpu"))
    return config


def restored(trainer: Trainer, case: Case) -> np.ndarray:
    """The image as `knitwork fit` would return it now (known pixels kept for inpainting)."""
    obs = case.observation
    h, w = obs.output_shape
    trainer.model.eval()
    with torch.no_grad():
        image = trainer.model.render(h, w).clamp(0, 1).cpu().numpy()
    trainer.model.train()
    if obs.task == "inpaint":
        image[obs.known] = obs.image[obs.known]
    return image


def score(image: np.ndarray, case: Case) -> float:
    """The objective's term for one image: hole PSNR for inpainting, else PSNR."""
    hole = case.observation.hole if case.observation.task == "inpaint" else None
    return min(psnr(image, case.truth, hole), 100.0)  # identical images: inf → 100 dB


def _save(folder: Path, step: int, trainers: list[Trainer], cases, images) -> None:
    from pipeline.worker import encode

    states = [
        {
            "model": t.model.state_dict(),
            "opt_g": t.opt_g.state_dict(),
            "opt_d": t.opt_d.state_dict() if t.opt_d is not None else None,
        }
        for t in trainers
    ]
    torch.save({"step": step, "trainers": states}, folder / STATE_FILE)
    for case, image in zip(cases, images, strict=True):
        path = folder / RESTORED_DIR / PurePosixPath(case.name).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(image, "x.png"))


def _load(trainers: list[Trainer]) -> int:
    """Trainer states from the trial's checkpoint, if Tune gave one; the step to go on from."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        saved = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    for trainer, state in zip(trainers, saved["trainers"], strict=True):
        trainer.model.load_state_dict(state["model"])
        trainer.opt_g.load_state_dict(state["opt_g"])
        if trainer.opt_d is not None:
            trainer.opt_d.load_state_dict(state["opt_d"])
    return int(saved["step"])


def _report(step: int, steps: int, trainers, cases) -> None:
    from ray import tune

    images = [restored(t, c) for t, c in zip(trainers, cases, strict=True)]
    scores = {metric_name(c.name): score(im, c) for c, im in zip(cases, images, strict=True)}
    metrics = {
        "step": step,
        "steps": steps,
        "objective": float(np.mean(list(scores.values()))),
        "finished": step >= steps,
        "diverged": False,
        **scores,
    }
    with tempfile.TemporaryDirectory() as tmp:
        _save(Path(tmp), step, trainers, cases, images)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def checkpoint_images(checkpoint) -> dict[str, bytes]:
    """The restored images in a trial's checkpoint, by their path under restored/."""
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        root = Path(folder)
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted((root / RESTORED_DIR).rglob("*.png"))
        }


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """The trainable: fit every case round-robin, report every ``setup.report_every`` steps."""
    from ray import tune

    torch.set_num_threads(max(1, setup.threads))
    config = trial_config(setup, params)
    cases = setup.cases
    trainers = [Trainer(c.observation, config, c.seed) for c in cases]
    steps, start = config.optim.steps, _load(trainers)
    for step in range(start, steps):
        try:
            for trainer in trainers:
                trainer.step(step)
        except NonFiniteLossError:
            tune.report(
                {"step": step + 1, "steps": steps, "objective": DIVERGED_OBJECTIVE,
                 "finished": True, "diverged": True}
            )  # fmt: skip
            return
        done = step + 1
        if done % setup.report_every == 0 or done == steps:
            _report(done, steps, trainers, cases)
    if start >= steps:  # restored from a final checkpoint: say so once more
        _report(steps, steps, trainers, cases)
