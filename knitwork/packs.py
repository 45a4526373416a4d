"""Packing many fits: ``Packs`` groups Trainers that can share a batch into
``PackedTrainer``s (K at a time) and steps them; ``fit_packed`` fits a list of observations that
way, each with its share of the memory budget; ``packed_config`` is that share."""

from __future__ import annotations

import dataclasses

import numpy as np

from knitwork.config import Config
from knitwork.device import resolve_device
from knitwork.memory import auto_pack, budget_bytes, pack_share
from knitwork.packed import PackedTrainer
from knitwork.result import FitResult
from knitwork.tasks import Observation
from knitwork.trainer import Trainer


def choose_pack(observation: Observation, config: Config, *, seed: int, images: int) -> int:
    """``auto_pack`` for ``images`` fits like this one (planned on the whole budget)."""
    probe = Trainer(observation, config, seed=seed)
    return auto_pack(str(probe.device), probe.plan, images)


def packed_config(config: Config, pack: int) -> Config:
    """``config`` with each of ``pack`` packed fits' share of its memory budget."""
    if pack <= 1:
        return config
    budget = budget_bytes(config.optim.max_memory, str(resolve_device(config.optim.device)))
    share = str(pack_share(budget, pack))
    return config.replace(optim=dataclasses.replace(config.optim, max_memory=share))


def _group_key(trainer: Trainer):
    obs = trainer.observation
    kernel = None if obs.kernel is None else obs.kernel.tobytes()
    shape = obs.output_shape if trainer.plan.crop is None else trainer.plan.crop
    return obs.task, shape, trainer.plan.crop, obs.image.shape[2], kernel


class Packs:
    """Trainers of one config stepped ``pack`` at a time as batched models: unfinished ones
    grouped by what can share a batch (a group of one steps its Trainer alone). ``step()``
    steps every unfinished image once; ``sync()`` brings each Trainer up to date (before its
    ``state_dict``, ``restored`` or ``result``)."""

    def __init__(self, trainers: list[Trainer], pack: int) -> None:
        self.trainers = trainers
        groups: dict[object, list[Trainer]] = {}
        for t in trainers:
            if not t.finished:
                groups.setdefault((_group_key(t), t.steps_done), []).append(t)
        self.units: list[Trainer | PackedTrainer] = []
        for members in groups.values():
            for start in range(0, len(members), max(1, pack)):
                chunk = members[start : start + pack]
                self.units.append(chunk[0] if len(chunk) == 1 else PackedTrainer(chunk))

    @property
    def finished(self) -> bool:
        return all(t.finished for t in self.trainers)

    def step(self) -> None:
        for unit in self.units:
            if not unit.finished:
                unit.step()

    def sync(self) -> None:
        for unit in self.units:
            if isinstance(unit, PackedTrainer):
                unit.sync()


def run_packs(trainers: list[Trainer], pack: int) -> None:
    """Step ``trainers`` ``pack`` at a time until every one has finished, then sync them."""
    packs = Packs(trainers, pack)
    while not packs.finished:
        packs.step()
    packs.sync()


def candidates(config: Config) -> list[Config]:
    """Held-out selection's fits: ``config`` at each of ``model.encoding.choices``."""
    model = config.model
    return [
        config.replace(
            model=dataclasses.replace(
                model, encoding=dataclasses.replace(model.encoding, scale=scale, choices=())
            )
        )
        for scale in model.encoding.choices
    ]


def fit_selected(
    observation: Observation,
    config: Config,
    *,
    seed: int,
    ground_truth: np.ndarray | None = None,
    keep_known: bool = True,
) -> FitResult:
    """Held-out selection: one fit per scale of ``model.encoding.choices``, packed as one
    batched model, each leaving the same pixels out (``optim.early_stop: holdout``); the
    result is the fit whose held-out error reached the lowest value. Its ``seconds`` are
    the whole selection's; ``choices`` holds every candidate's best held-out error."""
    options = candidates(config)
    share = [packed_config(c, len(options)) for c in options]
    trainers = [Trainer(observation, c, seed=seed, ground_truth=ground_truth) for c in share]
    run_packs(trainers, len(trainers))
    best = min(trainers, key=lambda t: t.best_error)
    result = best.result(keep_known)
    result.config = options[trainers.index(best)]
    result.seconds = sum(t.seconds for t in trainers)
    scales = config.model.encoding.choices
    result.choices = {s: t.best_error for s, t in zip(scales, trainers, strict=True)}
    return result


def fit_ensemble(
    observation: Observation,
    config: Config,
    *,
    seed: int,
    ground_truth: np.ndarray | None = None,
    keep_known: bool = True,
) -> FitResult:
    """An ensemble of ``optim.ensemble`` K fits of ``observation`` with seeds seed … seed+K−1,
    packed as one batched model, each with its share of the memory budget; the result's
    images are the mean of theirs (see ``FitResult.members``)."""
    members = config.optim.ensemble
    single = config.replace(optim=dataclasses.replace(config.optim, ensemble=1))
    share = packed_config(single, members)
    trainers = [
        Trainer(observation, share, seed=seed + i, ground_truth=ground_truth)
        for i in range(members)
    ]
    run_packs(trainers, members)
    results = [t.result(keep_known) for t in trainers]
    result = results[0]
    result.image = np.mean([r.image for r in results], axis=0, dtype=np.float32)
    result.raw = np.mean([r.raw for r in results], axis=0, dtype=np.float32)
    result.config, result.members = config, members
    result.seconds = sum(t.seconds for t in trainers)
    return result


def fit_one(
    observation: Observation,
    config: Config,
    *,
    seed: int,
    ground_truth: np.ndarray | None = None,
    keep_known: bool = True,
) -> FitResult:
    """A fit that packs its own models: held-out selection or an ensemble."""
    fitter = fit_selected if config.model.encoding.choices else fit_ensemble
    return fitter(observation, config, seed=seed, ground_truth=ground_truth, keep_known=keep_known)


def packs_itself(config: Config) -> bool:
    """Whether one image's fit is itself several packed fits (``fit_one``)."""
    return bool(config.model.encoding.choices) or config.optim.ensemble > 1


def fit_packed(
    observations: list[Observation],
    config: Config,
    *,
    seeds: list[int],
    ground_truths: list[np.ndarray | None] | None = None,
    pack: int | None = None,
    keep_known: bool = True,
) -> list[FitResult]:
    """Fit every observation, ``pack`` at a time as one batched model (None: ``auto_pack``
    from the device and the first image's plan), each with its share of the memory budget.
    Images that cannot share a batch (other sizes under full-grid steps, other kernels) are
    grouped with their own kind; results come back in input order."""
    truths = ground_truths or [None] * len(observations)
    if packs_itself(config):  # each image packs its own candidates or members
        return [
            fit_one(obs, config, seed=seed, ground_truth=truth, keep_known=keep_known)
            for obs, seed, truth in zip(observations, seeds, truths, strict=True)
        ]
    if pack is None:
        pack = choose_pack(observations[0], config, seed=seeds[0], images=len(observations))
    share = packed_config(config, pack)
    trainers = [
        Trainer(obs, share, seed=seed, ground_truth=truth)
        for obs, seed, truth in zip(observations, seeds, truths, strict=True)
    ]
    run_packs(trainers, pack)
    return [t.result(keep_known) for t in trainers]
