"""One trial of a search, as a Ray Tune function trainable: a thin loop over the core's
Trainer, so a trial runs a config exactly as `knitwork fit` does (early stop included).

A trial fits every image of the objective with the same config, stepping their trainers
round-robin (a trainer that has stopped early stays as it is), and every ``report_every`` steps
reports the running objective (mean PSNR, hole PSNR for inpainting) with a checkpoint: the
trainers' states and the images restored so far. ASHA compares trials at those reports and
stops the poor ones; a resumed trial continues from its last checkpoint.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from knitwork.config import Config
from knitwork.io import encode_image
from knitwork.metrics import psnr
from knitwork.packs import Packs, choose_pack, packed_config
from knitwork.tasks import Observation
from knitwork.trainer import NonFiniteLossError, Trainer
from pipeline.tracking import metric_key
from tune.space import apply_params

STATE_FILE = "trainers.pt"
RESTORED_DIR = "restored"  # restored images in a checkpoint: restored/<name>.png
DIVERGED_OBJECTIVE = 0.0  # the objective reported when a loss becomes non-finite (dB)
IDENTICAL_PSNR = 100.0  # dB reported for a perfect restoration (PSNR is infinite)


@dataclass(frozen=True, kw_only=True)
class Case:
    """One clean image of the objective, degraded with its own seed."""

    name: str  # relative name under --images
    observation: Observation
    truth: np.ndarray  # the clean image the restoration is scored against
    seed: int


@dataclass(frozen=True, kw_only=True)
class TrialSetup:
    """What every trial shares: the base config, the images, the reporting cadence."""

    task: str
    base: Config
    cases: tuple[Case, ...]
    report_every: int
    threads: int = 1
    pack: int = 0  # images fitted together as one batched model (knitwork.packed); 0: auto


def objective_label(task: str) -> str:
    return "mean hole PSNR (dB)" if task == "inpaint" else "mean PSNR (dB)"


def metric_name(name: str) -> str:
    """An MLflow- and Tune-safe metric key for an image: ``psnr/<name>``."""
    return metric_key("psnr", name)


def trial_config(setup: TrialSetup, params: dict[str, Any]) -> Config:
    """The base config (already set for the trial's device and memory) with its values."""
    return apply_params(setup.base, params)


def score(image: np.ndarray, case: Case) -> float:
    """The objective's term for one image: hole PSNR for inpainting, else PSNR."""
    hole = case.observation.hole if case.observation.task == "inpaint" else None
    return min(psnr(image, case.truth, hole), IDENTICAL_PSNR)


def _save(folder: Path, trainers: list[Trainer], cases, images) -> None:
    torch.save([t.state_dict() for t in trainers], folder / STATE_FILE)
    for case, image in zip(cases, images, strict=True):
        path = folder / RESTORED_DIR / PurePosixPath(case.name).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_image(image, ".png"))


def _load(trainers: list[Trainer]) -> int:
    """Trainer states from the trial's checkpoint, if Tune gave one; the step to go on from."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        states = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    for trainer, state in zip(trainers, states, strict=True):
        trainer.load_state_dict(state)
    return max(t.steps_done for t in trainers)


def _report(step: int, steps: int, trainers: list[Trainer], cases) -> None:
    from ray import tune

    images = [t.restored() for t in trainers]
    scores = {metric_name(c.name): score(im, c) for c, im in zip(cases, images, strict=True)}
    metrics = {
        "step": step,
        "steps": steps,
        "objective": float(np.mean(list(scores.values()))),
        "finished": all(t.finished for t in trainers),
        "diverged": False,
        **scores,
    }
    with tempfile.TemporaryDirectory() as tmp:
        _save(Path(tmp), trainers, cases, images)
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
    """The trainable: step every case round-robin, report every ``setup.report_every`` steps
    and when every trainer has finished (its steps, or its early stop)."""
    from ray import tune

    torch.set_num_threads(max(1, setup.threads))
    config = trial_config(setup, params)
    first = setup.cases[0]
    pack = setup.pack or choose_pack(
        first.observation, config, seed=first.seed, images=len(setup.cases)
    )
    config = packed_config(config, pack)
    trainers = [Trainer(c.observation, config, seed=c.seed) for c in setup.cases]
    steps, step = config.optim.steps, _load(trainers)
    packs = Packs(trainers, pack)
    reported = False
    while not all(t.finished for t in trainers):
        try:
            packs.step()
        except NonFiniteLossError:
            tune.report(
                {"step": step + 1, "steps": steps, "objective": DIVERGED_OBJECTIVE,
                 "finished": True, "diverged": True}
            )  # fmt: skip
            return
        step += 1
        reported = step % setup.report_every == 0 or all(t.finished for t in trainers)
        if reported:
            packs.sync()
            _report(step, steps, trainers, setup.cases)
    if not reported:  # restored from a final checkpoint: say so once more
        packs.sync()
        _report(step, steps, trainers, setup.cases)
