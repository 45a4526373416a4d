"""Packed fits: K images (or K seeds of one image) stepped as one batched model.

Each image keeps its own ``Trainer`` (observation, targets, crop sampler, stop rule, history);
the pack stacks their weights along a leading K axis and runs every network with
``torch.func.vmap`` over ``functional_call``, so the K patch MLPs become batched matmuls. The
losses stay separate per image and are summed only for the backward pass; Adam works element by
element, so one optimiser over the stacked weights takes exactly each image's own step. A packed
image's result therefore equals its solo fit up to floating-point rounding
(tests/knitwork/test_packed.py).

Sets of unequal size across the pack (the discriminator's real patches of differently masked
images, the whole patches of crops at different places) are padded and weighted, so padding
never counts. Images whose fit stops early (the denoising noise floor) keep the weights they
stopped with; their slice is still computed until the pack ends.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from knitwork.losses import Targets, discriminator_loss, generator_losses
from knitwork.patches import centre_index
from knitwork.result import FitResult
from knitwork.stepping import NonFiniteLossError, ema_decay, set_lr, update_average
from knitwork.trainer import Trainer

PACKED_TARGETS = (
    "stacks", "stack_known", "colours", "pixel_known", "low_res", "low_res_weight", "guide"
)  # fmt: skip


class _KernelPriors(nn.Module):
    """The learned downsampler's two priors as one forward call, for functional_call."""

    def __init__(self, downsampler: nn.Module) -> None:
        super().__init__()
        self.downsampler = downsampler

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.downsampler.sum_penalty(), self.downsampler.spread_penalty()


def _call(module: nn.Module, weights: dict[str, torch.Tensor], *args):
    return functional_call(module, weights, args)


def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack tensors of unequal length along a new K axis, zero-padded, with 1/0 weights
    (None when every length is the same, so nothing is padded)."""
    longest = max(len(r) for r in rows)
    if all(len(r) == longest for r in rows):
        return torch.stack(rows), None
    stacked = rows[0].new_zeros((len(rows), max(longest, 1), *rows[0].shape[1:]))
    weight = torch.zeros(len(rows), max(longest, 1), device=rows[0].device)
    for k, r in enumerate(rows):
        stacked[k, : len(r)] = r
        weight[k, : len(r)] = 1.0
    return stacked, weight


def stack_targets(targets: list[Targets]) -> dict[str, torch.Tensor]:
    """The targets of K images as tensors with a leading K axis (padded where sizes differ);
    what a task does not have (and weights where nothing is padded) is left out."""
    first = targets[0]
    packed = {
        name: None
        if getattr(first, name) is None
        else torch.stack([getattr(t, name) for t in targets])
        for name in PACKED_TARGETS
    }
    packed["real"], packed["real_weight"] = _padded([t.real for t in targets])
    full = [t.full.nonzero().squeeze(1) for t in targets]
    packed["full_index"], packed["full_weight"] = _padded(full)
    return {name: value for name, value in packed.items() if value is not None}


def _but_scale(config):
    """The config without its Fourier scale: fits that differ only there share a batch (each
    image's features are its own), as held-out selection's candidates do."""
    model = config.model
    encoding = dataclasses.replace(model.encoding, scale=1.0)
    return config.replace(model=dataclasses.replace(model, encoding=encoding))


def _check_packable(trainers: list[Trainer]) -> None:
    if not trainers:
        raise ValueError("a pack needs at least one fit")
    first = trainers[0]
    for t in trainers[1:]:
        problem = None
        if _but_scale(t.config) != _but_scale(first.config):
            problem = "configs differ"
        elif t.observation.task != first.observation.task:
            problem = "tasks differ"
        elif t.plan.coordinates != first.plan.coordinates or t.plan.crop != first.plan.crop:
            problem = "their step grids differ (different sizes: use crops or group by size)"
        elif t.observation.output_shape != first.observation.output_shape and t.plan.crop is None:
            problem = "full-grid fits of different sizes"
        elif t.steps_done != first.steps_done:
            problem = "they are at different steps"
        elif (t.observation.kernel is None) != (first.observation.kernel is None) or (
            t.observation.kernel is not None
            and not np.array_equal(t.observation.kernel, first.observation.kernel)
        ):
            problem = "their super-resolution kernels differ"
        if problem:
            raise ValueError(f"these fits cannot be packed together: {problem}")


class PackedTrainer:
    """K unfinished Trainers of one config, stepped together as one batched model.

    ``step()`` steps every image once; ``finished`` says when all have stopped; ``sync()``
    writes the packed weights and Adam moments back into each Trainer (so its ``state_dict``
    and ``result`` see them); ``results()`` syncs and ends every fit.
    """

    def __init__(self, trainers: list[Trainer]) -> None:
        _check_packable(trainers)
        self.trainers = trainers
        first = trainers[0]
        self.config, self.device = first.config, first.device
        self.template = copy.deepcopy(first.model).to("meta")
        names = [n for n, _ in first.model.named_parameters()]
        self.d_names = [n for n in names if n.startswith("discriminator.")]
        self.g_names = [n for n in names if n not in self.d_names]
        models = [dict(t.model.named_parameters()) for t in trainers]
        self.params = {
            n: torch.stack([m[n].detach() for m in models]).requires_grad_() for n in names
        }
        optim = self.config.optim
        self.opt_g = torch.optim.Adam([self.params[n] for n in self.g_names], lr=optim.lr)
        self.opt_d = (
            torch.optim.Adam([self.params[n] for n in self.d_names], lr=optim.d_lr)
            if self.d_names
            else None
        )
        self._stack_optimiser_state()
        self.averaged = (  # ``optim.ema``: each image's averaged generator weights, stacked
            {n: torch.stack([t.averaged[i] for t in trainers]) for i, n in enumerate(self.g_names)}
            if first.averaged is not None
            else None
        )
        self.autocast = first.autocast
        self.kernel_priors = (
            _KernelPriors(self.template.downsampler) if self.template.downsampler else None
        )
        self.targets = None if first.plan.crop else stack_targets([t.targets for t in trainers])
        self.features = None if first.plan.crop else torch.stack([t.features for t in trainers])
        for t in trainers:
            t.packed = len(trainers)
        self._synced = [False] * len(trainers)  # a finished fit's final state is in its Trainer

    # --- moving state between the pack and its Trainers ---

    def _pairs(self):
        """(packed optimiser, its parameter names, each Trainer's optimiser) for G and D."""
        yield self.opt_g, self.g_names, [t.opt_g for t in self.trainers]
        if self.opt_d is not None:
            yield self.opt_d, self.d_names, [t.opt_d for t in self.trainers]

    def _stack_optimiser_state(self) -> None:
        """Continue from the Trainers' Adam moments when they have any (a resumed fit)."""
        for packed, names, solos in self._pairs():
            states = [[s.state.get(p) for p in s.param_groups[0]["params"]] for s in solos]
            for i, name in enumerate(names):
                per_image = [state[i] for state in states]
                if any(s is None for s in per_image):
                    continue
                packed.state[self.params[name]] = {
                    "step": per_image[0]["step"].clone(),
                    "exp_avg": torch.stack([s["exp_avg"] for s in per_image]),
                    "exp_avg_sq": torch.stack([s["exp_avg_sq"] for s in per_image]),
                }

    @torch.no_grad()
    def _sync_one(self, k: int) -> None:
        trainer = self.trainers[k]
        solo = dict(trainer.model.named_parameters())
        for name, value in self.params.items():
            solo[name].copy_(value[k])
        if self.averaged is not None:
            for i, name in enumerate(self.g_names):
                trainer.averaged[i].copy_(self.averaged[name][k])
        for packed, names, solos in self._pairs():
            target = solos[k]
            for name, param in zip(names, target.param_groups[0]["params"], strict=True):
                state = packed.state.get(self.params[name])
                if state:
                    target.state[param] = {
                        "step": state["step"].clone(),
                        "exp_avg": state["exp_avg"][k].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][k].clone(),
                    }
        self._synced[k] = trainer.finished

    def sync(self) -> None:
        """Write the packed state into every Trainer that is still fitting."""
        for k, synced in enumerate(self._synced):
            if not synced:
                self._sync_one(k)

    def results(self, keep_known: bool = True) -> list[FitResult]:
        self.sync()
        return [t.result(keep_known) for t in self.trainers]

    # --- one image's networks, as pure functions for vmap ---

    def _sub(self, params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        return {n[len(prefix) :]: v for n, v in params.items() if n.startswith(prefix)}

    def _field(self, params, features):
        with self.autocast:
            mlp = self._sub(params, "patch_mlp.")
            return functional_call(self.template.patch_mlp, mlp, (features,)).float()

    def _pixels(self, params, field):
        if self.template.reconstructor is None:
            s, r, c = centre_index(self.config.model.patches)
            return field[:, :, s, r, c]
        weights = self._sub(params, "reconstructor.")
        return functional_call(self.template.reconstructor, weights, (field,))

    def _discriminate(self, params, stacks):
        weights = self._sub(params, "discriminator.")
        return functional_call(self.template.discriminator, weights, (stacks.flatten(1),))

    def _discriminator_loss(self, params, field, targets):
        fakes = field[targets["full_index"]]
        return discriminator_loss(
            self._discriminate(params, targets["real"]),
            self._discriminate(params, fakes),
            self.config.loss.label_smoothing,
            targets.get("real_weight"),
            targets.get("full_weight"),
        )

    def _generator_terms(self, params, field, targets, step: int):
        pixels = self._pixels(params, field)
        fake_logits = None
        if self.d_names:
            fake_logits = self._discriminate(params, field[targets["full_index"]])
        first = self.trainers[0]
        plain = Targets(
            real=targets["real"],
            full=targets["full_index"],
            height=first.targets.height,
            width=first.targets.width,
            **{name: targets.get(name) for name in PACKED_TARGETS},
        )
        downsample, priors = first.downsample, None
        if self.kernel_priors is not None:
            kernel = self._sub(params, "downsampler.")
            priors = functional_call(
                self.kernel_priors, {"downsampler." + n: v for n, v in kernel.items()}, ()
            )
            downsample = functools.partial(_call, self.template.downsampler, kernel)
        loss = self.config.loss
        terms = generator_losses(
            field,
            pixels,
            fake_logits,
            plain,
            loss,
            self.config.model.patches,
            step,
            downsample,
            targets.get("full_weight"),
            self.config.optim.steps,
        )
        if priors is not None:
            terms["kernel"], terms["kernel_spread"] = priors
            terms["total"] = (
                terms["total"] + loss.kernel_sum * priors[0] + loss.kernel_spread * priors[1]
            )
        return terms, pixels

    # --- stepping ---

    @property
    def finished(self) -> bool:
        return all(t.finished for t in self.trainers)

    @property
    def steps_done(self) -> int:
        return max(t.steps_done for t in self.trainers)

    def _inputs(self):
        """This step's features (K, N, 2F) and targets: fixed, or each image's new crop."""
        if self.targets is not None:
            return self.features, self.targets
        for t in self.trainers:
            t._next_crop()
        features = torch.stack([t.features for t in self.trainers])
        return features, stack_targets([t.targets for t in self.trainers])

    def _discriminator_step(self, field, targets) -> torch.Tensor:
        fakes = field.detach()
        loss = vmap(self._discriminator_loss)
        d_params = {n: self.params[n] for n in self.d_names}
        for _ in range(self.config.optim.d_steps):
            self.opt_d.zero_grad(set_to_none=True)
            losses = loss(d_params, fakes, targets)
            losses.sum().backward()
            optim = self.config.optim
            set_lr(self.opt_d, optim.d_lr * optim.lr_factor(self.steps_done))
            self.opt_d.step()
        return losses.detach()

    def _generator_step(self, field, targets, step: int):
        params = {n: self.params[n] for n in self.g_names}
        params |= {n: self.params[n].detach() for n in self.d_names}  # D's grads unused here
        terms, pixels = vmap(functools.partial(self._generator_terms, step=step))(
            params, field, targets
        )
        totals = terms["total"]
        if not torch.isfinite(totals).all():
            bad = int((~torch.isfinite(totals)).nonzero()[0, 0])
            values = ", ".join(f"{k}={float(v[bad].detach()):.4g}" for k, v in terms.items())
            raise NonFiniteLossError(
                f"loss of packed image {bad} became non-finite at step {step} ({values}): "
                "lower the learning rates (optim.lr, optim.d_lr) or the loss weights"
            )
        self.opt_g.zero_grad(set_to_none=True)
        totals.sum().backward()
        set_lr(self.opt_g, self.config.optim.lr * self.config.optim.lr_factor(step))
        self.opt_g.step()
        if self.averaged is not None:
            names = self.g_names
            decay = ema_decay(self.config.optim.ema, step)
            update_average(
                [self.averaged[n] for n in names], [self.params[n] for n in names], decay
            )
        return terms, pixels.detach()

    def step(self) -> list[dict[str, float] | None]:
        """One iteration of every image; each image's history entry when it is logged."""
        if self.finished:
            raise RuntimeError("the packed fit has finished: no more steps")
        start = time.perf_counter()
        step = self.steps_done
        features, targets = self._inputs()
        alternate = self.config.optim.schedule == "alternate"
        update_d = self.opt_d is not None and (not alternate or step % 2 == 0)
        update_g = not alternate or step % 2 == 1 or self.opt_d is None
        g_params = {n: self.params[n] for n in self.g_names}
        with torch.set_grad_enabled(update_g):
            field = vmap(self._field)(g_params, features)
        terms: dict[str, torch.Tensor] = {}
        if update_d:
            terms["discriminator"] = self._discriminator_step(field, targets)
        pixels = None
        if update_g:
            g_terms, pixels = self._generator_step(field, targets, step)
            terms.update(g_terms)
        return self._advance(terms, pixels, time.perf_counter() - start)

    def _advance(self, terms, pixels, seconds: float) -> list[dict[str, float] | None]:
        active = [k for k, t in enumerate(self.trainers) if not t.finished]
        entries: list[dict[str, float] | None] = [None] * len(self.trainers)
        for k in active:
            trainer = self.trainers[k]
            mine = {name: value[k] for name, value in terms.items()}
            entries[k] = trainer.advance(mine, None if pixels is None else pixels[k])
            if trainer.improved:  # ``optim.keep_best``: this image's slice of the pack
                weights = self.averaged if self.averaged is not None else self.params
                trainer.keep(weights[n][k] for n in self.g_names)
            trainer.seconds += seconds / len(active)
            if trainer.finished:  # keep the weights it stopped with
                self._sync_one(k)
        return entries
