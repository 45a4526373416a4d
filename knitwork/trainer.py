"""The Trainer: one fit's whole state (model, optimisers, targets, step, stop rule) and its
iteration. Every caller steps it: ``knitwork.fit.fit`` to the end, a Tune trial round-robin over
several images with checkpoints, so a config runs the same everywhere.

Each iteration computes the patch field once and reuses it for every term: the discriminator
sees it detached, then the generator's losses (eq. 4) are taken on the same tensor.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from knitwork.config import Config
from knitwork.device import fast_bf16, resolve_device
from knitwork.kernel_estimation import kernel_for
from knitwork.kernels import lr_coordinates
from knitwork.losses import Targets, discriminator_loss, generator_losses
from knitwork.memory import StepPlan, budget_bytes, plan_steps
from knitwork.metrics import psnr
from knitwork.model import Knitwork, count_parameters, pixel_grid
from knitwork.references import downsampler, guide_image, kernel_reach, smoothed_real
from knitwork.result import FitResult
from knitwork.stepping import (  # noqa: F401 (callers import NonFiniteLossError from here)
    NonFiniteLossError,
    check_finite,
    ema_decay,
    frozen,
    held_out,
    kept_copy,
    noise_floor,
    set_lr,
    update_average,
    weights_in_place,
)
from knitwork.targets import build_sr_targets, build_targets, crop_targets, sr_crop_targets
from knitwork.tasks import Observation


class Trainer:
    """One fit: model, optimisers, targets, the step counter and the stop rule.

    ``step()`` runs one iteration and returns the history entry when that step is logged (every
    ``optim.log_every`` steps, the last one, an early stop); ``finished`` says when to stop;
    ``restored()`` draws the current image; ``result()`` ends the fit. ``state_dict()`` /
    ``load_state_dict()`` hold everything needed to continue exactly where it was.
    """

    def __init__(
        self,
        observation: Observation,
        config: Config,
        *,
        seed: int = 0,
        ground_truth: np.ndarray | None = None,
    ) -> None:
        if config.optim.ensemble > 1:
            raise ValueError(
                "optim.ensemble > 1 runs through knitwork.fit.fit or knitwork.packs.fit_packed; "
                "a Trainer fits one member: set optim.ensemble to 1"
            )
        if config.model.encoding.choices:
            raise ValueError(
                "model.encoding.choices (held-out selection) runs through knitwork.fit.fit or "
                "knitwork.packs.fit_packed; a Trainer fits one scale: leave choices empty"
            )
        self.estimated = kernel_for(observation, config)  # blind SR's kernel, if estimated
        if self.estimated is not None:
            observation = dataclasses.replace(observation, kernel=self.estimated)
        self.observation, self.config, self.seed = observation, config, seed
        self.ground_truth = ground_truth
        self.device = resolve_device(config.optim.device)
        self.steps_done, self.stopped_at, self.seconds = 0, None, 0.0
        self.packed = 1  # how many fits step together (``knitwork.packed``)
        self.history: list[dict[str, float]] = []
        self.super_resolve = observation.task == "sr" and config.model.method == "knitwork"
        blind = self.super_resolve and observation.kernel is None
        with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG untouched
            torch.manual_seed(seed)
            self.model = Knitwork(
                config.model,
                channels=observation.image.shape[2],
                seed=seed,
                discriminator=config.loss.gamma > 0,
                kernel_scale=observation.scale if blind else None,
                extent=max(observation.output_shape),
            )
        self.model.to(self.device)
        self.held = held_out(observation, config, seed)
        self.real_image = smoothed_real(observation, config, self.device)
        self.guide = guide_image(observation, config, self.device)
        self.best_error, self.best_step = float("inf"), 0  # of the held-out pixels
        self.plan = self._plan()
        self.downsample = (
            downsampler(observation, self.model, self.device) if self.super_resolve else None
        )
        if self.plan.crop is None:
            self.targets, self.coords = self._targets()
            self.features = self._encode()
        else:  # each step draws its window (``_next_crop``) from a generator of its own
            self.crops = torch.Generator().manual_seed(seed)
            self.image = torch.from_numpy(observation.image).to(self.device).permute(2, 0, 1)
            self.known = torch.from_numpy(self._fitted().known).to(self.device)
        self.opt_g = torch.optim.Adam(self.model.generator_parameters(), lr=config.optim.lr)
        d = self.model.discriminator
        self.opt_d = torch.optim.Adam(d.parameters(), lr=config.optim.d_lr) if d else None
        bf16 = config.optim.precision == "bf16" or (
            config.optim.precision == "auto" and fast_bf16(self.device)
        )
        self.precision = "bf16" if bf16 else "fp32"
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        )
        self.floor = noise_floor(observation, config)
        self.averaged = (  # ``optim.ema``: the generator's averaged weights
            [p.detach().clone() for p in self.model.generator_parameters()]
            if config.optim.ema > 0
            else None
        )
        self.kept: list[torch.Tensor] | None = None  # ``optim.keep_best``: the best step's weights

    def _plan(self) -> StepPlan:
        """Full-grid steps when they fit ``optim.max_memory``, else sampled crops (for
        super-resolution, HR crops of whole LR pixels); ``optim.crop_size`` forces crops of
        that side. The MLP baseline's SR fit (on the LR pixels) has no crops."""
        obs, optim = self.observation, self.config.optim
        h, w = obs.output_shape if self.super_resolve else obs.known.shape
        crops = obs.task != "sr" or self.super_resolve
        plan = plan_steps(
            self.config,
            channels=obs.image.shape[2],
            grid=(h, w),
            input_pixels=obs.known.size,
            parameters=count_parameters(self.model),
            budget=budget_bytes(optim.max_memory, str(self.device)),
            crops=crops,
            crop_unit=obs.scale if self.super_resolve else 1,
        )
        crop = (optim.crop_size, optim.crop_size) if optim.crop_size and crops else plan.crop
        if crop is not None:
            r = obs.scale if self.super_resolve else 1
            crop = (max(r, min(crop[0], h) // r * r), max(r, min(crop[1], w) // r * r))
            plan = dataclasses.replace(plan, crop=crop, coordinates=crop[0] * crop[1])
        return plan

    def _next_crop(self) -> None:
        """Draw this step's window: its coordinates' features and its targets."""
        r = self.observation.scale if self.super_resolve else 1
        h, w = self.observation.known.shape  # SR: the window is drawn in LR pixels
        ch, cw = self.plan.crop[0] // r, self.plan.crop[1] // r
        top = int(torch.randint(0, h - ch + 1, (1,), generator=self.crops))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=self.crops))
        box = (top, left, ch, cw)
        window = tuple(r * v for v in box)  # the box on the output grid
        self.coords = pixel_grid(r * h, r * w, self.device, window)
        patches = self.config.model.patches
        if self.super_resolve:
            reach = kernel_reach(self.observation, self.model)
            self.targets = sr_crop_targets(self.image, box, r, reach, patches)
        else:
            self.targets = crop_targets(self.image, self.known, box, patches)
            if self.held is not None or self.real_image is not None:  # denoising: every pixel
                source = self.image if self.real_image is None else self.real_image
                every = torch.ones_like(self.known)
                self.targets.real = crop_targets(source, every, box, patches).real
        self.targets.guide = self._guide_pixels(window)
        self.features = self._encode()

    def _guide_pixels(self, window: tuple[int, int, int, int] | None = None):
        """The guide (``references.guide_image``) as a row per pixel of the output grid or of
        its window (top, left, height, width); None without one."""
        if self.guide is None:
            return None
        guide = self.guide
        if window is not None:
            top, left, h, w = window
            guide = guide[:, top : top + h, left : left + w]
        return guide.flatten(1).T

    @torch.no_grad()
    def _encode(self) -> torch.Tensor:
        """The Fourier features of the fitted coordinates (fixed for the whole fit)."""
        return self.model.encoding(self.coords)

    def _fitted(self) -> Observation:
        """The observation the losses see: without the held-out pixels (``held_out``)."""
        if self.held is None:
            return self.observation
        return dataclasses.replace(self.observation, known=self.observation.known & ~self.held)

    def _targets(self) -> tuple[Targets, torch.Tensor]:
        """The targets, and the coordinates the field is fitted at."""
        obs = self._fitted()
        if self.super_resolve:
            coords = pixel_grid(*obs.output_shape, self.device)
            targets = build_sr_targets(obs, self.model, self.device)
            targets.guide = self._guide_pixels()
            return targets, coords
        # every other task, and the MLP baseline for SR: fit the observed pixels
        h, w = obs.known.shape
        if obs.task == "sr":
            coords = lr_coordinates(h, w, obs.scale).to(self.device)
        else:
            coords = pixel_grid(h, w, self.device)
        every = self.observation  # the losses skip the held-out pixels, the real set does not
        targets = build_targets(every, self.model, self.device, self.held, self.real_image)
        targets.guide = self._guide_pixels()
        return targets, coords

    def _held_out_error(self, pixels: torch.Tensor | None) -> float | None:
        """Mean squared error of this step's output on its held-out pixels (their noisy
        values: the expected error is the true one plus σ², so its minimum is the true one's)."""
        if self.held is None or pixels is None:
            return None
        held = ~self.targets.pixel_known
        if not held.any():
            return None
        error = (pixels[held].clamp(0, 1) - self.targets.colours[held]).pow(2).mean()
        return float(error)

    def _residual(self, pixels: torch.Tensor) -> float:
        """RMS distance of the output from the (noisy) observed pixels of this step."""
        return float((pixels.clamp(0, 1) - self.targets.colours).pow(2).mean().sqrt())

    @property
    def finished(self) -> bool:
        return self.stopped_at is not None or self.steps_done >= self.config.optim.steps

    def field(self) -> torch.Tensor:
        with self.autocast:
            return self.model.patch_mlp(self.features).float()

    def discriminator_step(self, field: torch.Tensor) -> torch.Tensor:
        fakes = field.detach()[self.targets.full].flatten(1)
        if len(fakes) == 0 or len(self.targets.real) == 0:  # a crop inside a hole: skip D
            return torch.zeros((), device=field.device)
        for _ in range(self.config.optim.d_steps):
            self.opt_d.zero_grad(set_to_none=True)
            d = self.model.discriminator
            loss = discriminator_loss(
                d(self.targets.real), d(fakes), self.config.loss.label_smoothing
            )
            loss.backward()
            optim = self.config.optim
            set_lr(self.opt_d, optim.d_lr * optim.lr_factor(self.steps_done))
            self.opt_d.step()
        return loss.detach()

    def generator_step(self, field: torch.Tensor, step: int):
        pixels = self.model.pixels(field)
        d = self.model.discriminator
        fake_logits = None
        if d is not None:  # D scores the fakes; its own weight gradients are not needed here
            with frozen(d):
                fake_logits = d(field[self.targets.full])
        terms = generator_losses(
            field,
            pixels,
            fake_logits,
            self.targets,
            self.config.loss,
            self.config.model.patches,
            step,
            self.downsample,
            steps=self.config.optim.steps,
        )
        if self.model.downsampler is not None:
            loss = self.config.loss
            terms["kernel"] = self.downsample.sum_penalty()
            terms["kernel_spread"] = self.downsample.spread_penalty()
            terms["total"] = (
                terms["total"]
                + loss.kernel_sum * terms["kernel"]
                + loss.kernel_spread * terms["kernel_spread"]
            )
        check_finite(step, terms)
        self.opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        set_lr(self.opt_g, self.config.optim.lr * self.config.optim.lr_factor(step))
        self.opt_g.step()
        if self.averaged is not None:
            decay = ema_decay(self.config.optim.ema, step)
            update_average(self.averaged, self.model.generator_parameters(), decay)
        return terms, pixels.detach()

    def _iterate(self, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        alternate = self.config.optim.schedule == "alternate"
        update_d = self.opt_d is not None and (not alternate or step % 2 == 0)
        update_g = not alternate or step % 2 == 1 or self.opt_d is None
        if update_g:
            field = self.field()
        else:
            with torch.no_grad():
                field = self.field()
        terms: dict[str, torch.Tensor] = {}
        if update_d:
            terms["discriminator"] = self.discriminator_step(field)
        pixels = None
        if update_g:
            g_terms, pixels = self.generator_step(field, step)
            terms.update(g_terms)
        return terms, pixels

    def step(self) -> dict[str, float] | None:
        """One iteration; the history entry when this step is logged, else None."""
        if self.finished:
            raise RuntimeError("the fit has finished: no more steps")
        start = time.perf_counter()
        if self.plan.crop is not None:
            self._next_crop()
        terms, pixels = self._iterate(self.steps_done)
        entry = self.advance(terms, pixels)
        if self.improved:
            self.keep(
                self.averaged if self.averaged is not None else self.model.generator_parameters()
            )
        self.seconds += time.perf_counter() - start
        return entry

    @property
    def improved(self) -> bool:
        """``optim.keep_best``: the step just counted reached a new best held-out error."""
        return self.config.optim.keep_best and self.best_step == self.steps_done > 0

    def keep(self, weights) -> None:
        """Hold a copy of these generator weights as the ones the result is drawn with."""
        self.kept = kept_copy(self.kept, weights)

    def advance(
        self, terms: dict[str, torch.Tensor], pixels: torch.Tensor | None
    ) -> dict[str, float] | None:
        """Count one iteration done with these loss terms and output pixels (None when the
        generator did not step): the stop rule, and the history entry when it is logged.
        ``step`` calls it; a packed fit calls it with each image's share."""
        self.steps_done += 1
        done = self.steps_done
        if self.floor is not None and pixels is not None and self._residual(pixels) <= self.floor:
            self.stopped_at = done
        error = self._held_out_error(pixels)
        if error is not None:
            if error < self.best_error:
                self.best_error, self.best_step = error, done
            elif done - self.best_step >= self.config.optim.patience:
                self.stopped_at = done
        if done % self.config.optim.log_every != 0 and not self.finished:
            return None
        entry = {"step": float(done), **{k: float(v.detach()) for k, v in terms.items()}}
        if error is not None:
            entry["holdout"] = error
        h, w = self.observation.output_shape
        if self.ground_truth is not None and pixels is not None and len(pixels) == h * w:
            current = pixels.clamp(0, 1).view(h, w, -1).cpu().numpy()
            entry["psnr"] = psnr(current, self.ground_truth)
        self.history.append(entry)
        return entry

    def _paste_known(self, image: np.ndarray) -> np.ndarray:
        obs = self.observation
        if obs.task == "inpaint":
            image[obs.known] = obs.image[obs.known]
        return image

    @property
    def drawn(self) -> list[torch.Tensor] | None:
        """The generator weights the image is drawn with when they are not the current ones:
        the best step's (``optim.keep_best``), else the averaged ones (``optim.ema``)."""
        return self.kept if self.kept is not None else self.averaged

    @torch.no_grad()
    def restored(self, keep_known: bool = True) -> np.ndarray:
        """The image as the fit would return it now, drawn where the model lives."""
        h, w = self.observation.output_shape
        self.model.eval()
        with weights_in_place(self.model.generator_parameters(), self.drawn):
            image = self.model.render(h, w, self.plan.render_chunk).clamp(0, 1).cpu().numpy()
        self.model.train()
        return self._paste_known(image) if keep_known else image

    def result(self, keep_known: bool = True) -> FitResult:
        """End the fit: the model moves to the CPU and draws the result there (with the
        weights of ``drawn`` when there are any, which the returned model then holds)."""
        if self.drawn is not None:
            with torch.no_grad():
                for p, mean in zip(self.model.generator_parameters(), self.drawn, strict=True):
                    p.copy_(mean)
        model = self.model.cpu().eval()
        h, w = self.observation.output_shape
        raw = model.render(h, w, self.plan.render_chunk).clamp(0, 1).numpy()
        image = self._paste_known(raw.copy()) if keep_known else raw.copy()
        return FitResult(
            image=image,
            raw=raw,
            model=model,
            config=self.config,
            task=self.observation.task,
            seed=self.seed,
            seconds=self.seconds,
            history=self.history,
            scale=self.observation.scale,
            stopped_at=self.stopped_at,
            crop=self.plan.crop,
            packed=self.packed,
            kernel=self.estimated,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to go on: weights (their average, the best step's), both optimisers,
        step, stop, history, time, where the crop sampler is and which pixels are held out."""
        return {
            "model": self.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "steps_done": self.steps_done,
            "stopped_at": self.stopped_at,
            "seconds": self.seconds,
            "history": list(self.history),
            "crops": None if self.plan.crop is None else self.crops.get_state(),
            "averaged": None if self.averaged is None else [a.clone() for a in self.averaged],
            "best": (self.best_error, self.best_step),
            "held": None if self.held is None else torch.from_numpy(self.held.copy()),
            "kept": None if self.kept is None else [k.clone() for k in self.kept],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.held is not None and state.get("held") is not None:
            self.held = state["held"].numpy().astype(bool)  # the fit's own, not this seed's
            if self.plan.crop is not None:
                self.known = torch.from_numpy(self._fitted().known).to(self.device)
        if self.plan.crop is None:  # crops encode their coordinates at each step
            self.targets, self.coords = self._targets()  # the loaded held-out pixels
            self.features = self._encode()  # the loaded frequencies
        self.opt_g.load_state_dict(state["opt_g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(state["opt_d"])
        self.steps_done, self.stopped_at = int(state["steps_done"]), state["stopped_at"]
        self.seconds, self.history = float(state["seconds"]), list(state["history"])
        if self.plan.crop is not None and state.get("crops") is not None:
            self.crops.set_state(state["crops"])
        self.best_error, self.best_step = state.get("best", (float("inf"), 0))
        if self.averaged is not None and state.get("averaged") is not None:
            self.averaged = [a.to(self.device) for a in state["averaged"]]
        if self.config.optim.keep_best and state.get("kept") is not None:
            self.kept = [k.to(self.device) for k in state["kept"]]
