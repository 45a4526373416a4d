"""The denoising switches do what their config fields say: aggregation draws each pixel as the
mean of the finest patches covering it, ``optim.ema`` draws with averaged weights (and resumes
them), the held-out pixels never reach a loss and stop the fit when their error stops falling,
and ``encoding.unit: pixel`` scales the frequencies with the image."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from knitwork.config import Config, EncodingConfig
from knitwork.degradation import Degradation
from knitwork.metrics import psnr
from knitwork.model import Knitwork, pixel_grid
from knitwork.presets import get_preset
from knitwork.stepping import held_out, weights_in_place
from knitwork.trainer import Trainer
from tests.conftest import example_image, shrink


def _denoise(steps: int = 6, **optim) -> Config:
    """fast-denoise with every switch off but those named, in fp32 (bf16 rounding, where the
    CPU has it, would blur the comparisons of packed and solo fits)."""
    config = shrink(get_preset("fast-denoise"), steps=steps)
    optim = {"early_stop": "none", "ema": 0.0, "precision": "fp32"} | optim  # exact sums
    return config.replace(optim=dataclasses.replace(config.optim, **optim))


def _image_unit_model():
    """fast-denoise's model with 4 cycles across the image, whatever its size."""
    return dataclasses.replace(get_preset("fast-denoise").model, encoding=EncodingConfig(scale=4.0))


def _run(trainer: Trainer) -> Trainer:
    while not trainer.finished:
        trainer.step()
    return trainer


def test_aggregate_renders_the_mean_of_the_finest_patches_covering_each_pixel():
    config = get_preset("fast-denoise").model
    model = Knitwork(dataclasses.replace(config, aggregate=True), channels=3, seed=1).eval()
    h, w = 7, 9
    with torch.no_grad():
        finest = model.patch_mlp(model.encoding(pixel_grid(h, w)))[:, :, 0]  # (N, C, P, P)
        size = finest.shape[-1]
        columns = finest.reshape(h * w, -1).T.unsqueeze(0)  # (1, C·P·P, N): F.fold's layout
        sums = F.fold(columns, (h, w), kernel_size=size, padding=size // 2)
        ones = F.fold(torch.ones_like(columns[:, : size * size]), (h, w), size, padding=size // 2)
        expected = (sums / ones)[0].permute(1, 2, 0)
        drawn = model.render(h, w, chunk=10)  # chunks that split rows
    torch.testing.assert_close(drawn, expected)
    plain = Knitwork(config, channels=3, seed=1).eval()
    assert not torch.allclose(plain.render(h, w), drawn)  # the switch changes the picture


def test_ema_draws_the_averaged_weights_and_resumes_them(tiny):
    obs, _ = Degradation(task="denoise").apply(tiny, 0)
    plain = _run(Trainer(obs, _denoise(steps=8), seed=2))
    averaged = _run(Trainer(obs, _denoise(steps=8, ema=0.9), seed=2))
    # the iterates are the same; only what is drawn differs
    assert [h["total"] for h in plain.history] == [h["total"] for h in averaged.history]
    weights = [p.detach().clone() for p in averaged.model.generator_parameters()]
    image = averaged.restored()
    assert not np.allclose(image, plain.restored())
    for p, before in zip(averaged.model.generator_parameters(), weights, strict=True):
        torch.testing.assert_close(p.detach(), before)  # drawing put the iterate back
    result = averaged.result()
    np.testing.assert_array_equal(result.image, image)
    for p, mean in zip(result.model.generator_parameters(), averaged.averaged, strict=True):
        torch.testing.assert_close(p.detach(), mean.cpu())
    first = Trainer(obs, _denoise(steps=8, ema=0.9), seed=2)
    for _ in range(4):
        first.step()
    resumed = Trainer(obs, _denoise(steps=8, ema=0.9), seed=5)
    resumed.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(_run(resumed).restored(), image)


def test_held_out_pixels_never_reach_a_loss(tiny):
    obs, _ = Degradation(task="denoise").apply(tiny, 0)
    config = _denoise(steps=5, early_stop="holdout", holdout=0.2, patience=1000)
    held = held_out(obs, config, seed=4)
    assert 0.1 < held.mean() < 0.3
    changed = obs.image.copy()
    changed[held] = 1 - changed[held]  # other noisy values where nothing is fitted
    other = dataclasses.replace(obs, image=changed)
    a, b = (_run(Trainer(o, config, seed=4)) for o in (obs, other))
    no_gan = config.replace(loss=dataclasses.replace(config.loss, gamma=0.0))
    c, d = (_run(Trainer(o, no_gan, seed=4)) for o in (obs, other))
    # with the GAN off every loss ignores them (the discriminator alone sees every patch)
    np.testing.assert_array_equal(c.restored(), d.restored())
    assert not np.array_equal(a.restored(), b.restored())
    assert all("holdout" in h for h in c.history)
    assert c.history[-1]["holdout"] != d.history[-1]["holdout"]  # measured on the held pixels


def test_holdout_stops_once_the_held_out_error_stops_falling(tiny):
    obs, _ = Degradation(task="denoise", sigma=50).apply(tiny, 1)
    config = _denoise(steps=400, early_stop="holdout", patience=15, log_every=5)
    trainer = _run(Trainer(obs, config, seed=0))
    assert trainer.stopped_at is not None and trainer.stopped_at < 400
    assert trainer.stopped_at - trainer.best_step == 15
    errors = [h["holdout"] for h in trainer.history]
    assert min(errors) == trainer.best_error or trainer.best_error < min(errors)


def test_pixel_unit_scales_the_frequencies_with_the_image():
    model = _image_unit_model()
    pixel = dataclasses.replace(model, encoding=EncodingConfig(scale=0.05, unit="pixel"))
    small = Knitwork(pixel, channels=3, seed=0, extent=64)
    large = Knitwork(pixel, channels=3, seed=0, extent=128)
    torch.testing.assert_close(large.encoding.B, 2 * small.encoding.B)
    image = Knitwork(model, channels=3, seed=0, extent=128)
    torch.testing.assert_close(image.encoding.B, Knitwork(model, channels=3, seed=0).encoding.B)


def test_spread_draws_frequency_bands_around_the_scale():
    model = _image_unit_model()
    one = Knitwork(model, channels=3, seed=0).encoding.B
    spread = dataclasses.replace(model, encoding=EncodingConfig(scale=4.0, spread=3.0))
    wide = Knitwork(spread, channels=3, seed=0).encoding.B
    ratio = (wide / one)[:, 0]  # each row's own factor, the same for both coordinates
    torch.testing.assert_close(ratio, (wide / one)[:, 1])
    assert ratio.min() >= 1 / 3 - 1e-6 and ratio.max() <= 3 + 1e-6
    assert ratio.min() < 0.5 and ratio.max() > 2  # the band is used, not just its centre


def test_held_out_selection_keeps_the_scale_whose_held_out_error_is_lowest(tiny):
    from knitwork.fit import fit

    obs, truth = Degradation(task="denoise", sigma=30).apply(tiny, 2)
    config = _denoise(steps=40, early_stop="holdout", patience=1000)
    model = config.model
    choosing = config.replace(
        model=dataclasses.replace(
            model, encoding=dataclasses.replace(model.encoding, choices=(1.0, 16.0))
        )
    )
    seen = []
    result = fit(obs, choosing, seed=1, on_step=lambda step, entry: seen.append(step))
    assert set(result.choices) == {1.0, 16.0}
    chosen = min(result.choices, key=result.choices.get)
    assert (
        result.config.model.encoding.scale == chosen and result.config.model.encoding.choices == ()
    )
    assert seen == [int(h["step"]) for h in result.history]
    solo = {}
    for scale in (1.0, 16.0):
        encoding = dataclasses.replace(model.encoding, scale=scale)
        single = config.replace(model=dataclasses.replace(model, encoding=encoding))
        trainer = _run(Trainer(obs, single, seed=1))
        solo[scale] = trainer
        assert abs(trainer.best_error - result.choices[scale]) < 1e-3 * trainer.best_error + 1e-6
    # packed and solo differ by rounding only (bf16 on CPUs that have it): within 0.2 dB
    assert abs(psnr(result.image, truth) - psnr(solo[chosen].result().image, truth)) < 0.2
    with np.testing.assert_raises_regex(ValueError, "held-out selection"):
        Trainer(obs, choosing, seed=1)


def test_keep_best_draws_the_weights_of_the_best_held_out_step(tiny):
    obs, _ = Degradation(task="denoise", sigma=50).apply(tiny, 1)
    config = _denoise(steps=400, early_stop="holdout", patience=20, ema=0.9, keep_best=True)
    kept = _run(Trainer(obs, config, seed=0))
    assert kept.stopped_at is not None and kept.stopped_at - kept.best_step == 20
    # not the averaged weights it stopped with ...
    with weights_in_place(kept.model.generator_parameters(), kept.averaged):
        last = kept.model.eval().render(*tiny.shape[:2]).clamp(0, 1).numpy()
    assert not np.array_equal(last, kept.restored())
    # ... but those of the same fit run only to its best step
    until = dataclasses.replace(config.optim, steps=kept.best_step, keep_best=False)
    upto = _run(Trainer(obs, config.replace(optim=until), seed=0))
    assert upto.steps_done == kept.best_step and upto.stopped_at is None
    np.testing.assert_array_equal(kept.result().image, upto.result().image)
    # resumed after its best step, it keeps that step's weights
    first = Trainer(obs, config, seed=0)
    while first.steps_done < kept.best_step + 5:
        first.step()
    resumed = Trainer(obs, config, seed=7)
    resumed.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(_run(resumed).result().image, upto.result().image)


def test_keep_best_in_a_pack_keeps_each_images_own_best_step():
    from knitwork.packed import PackedTrainer

    cases = [
        Degradation(task="denoise", sigma=50).apply(example_image(name, 24), seed)
        for seed, name in enumerate(("bird", "head"))
    ]
    config = _denoise(steps=300, early_stop="holdout", patience=30, ema=0.9, keep_best=True)
    solo = [_run(Trainer(obs, config, seed=s)) for s, (obs, _) in enumerate(cases)]
    pack = PackedTrainer([Trainer(obs, config, seed=s) for s, (obs, _) in enumerate(cases)])
    while not pack.finished:
        pack.step()
    for (_, truth), a, b in zip(cases, solo, pack.trainers, strict=True):
        assert b.kept is not None and abs(b.best_step - a.best_step) <= 5
        assert abs(psnr(a.result().image, truth) - psnr(b.result().image, truth)) < 0.2


def test_keep_best_needs_the_held_out_pixels():
    with np.testing.assert_raises_regex(ValueError, "keep_best needs optim.early_stop: holdout"):
        _denoise(keep_best=True)


def test_real_blur_takes_the_discriminators_real_patches_from_a_smoothed_image(tiny):
    obs, _ = Degradation(task="denoise", sigma=25).apply(tiny, 0)
    plain = Trainer(obs, _denoise(), seed=0)
    blurred = _denoise()
    blurred = blurred.replace(loss=dataclasses.replace(blurred.loss, real_blur=1.5))
    smooth = Trainer(obs, blurred, seed=0)
    # the losses' targets are the noisy image's as before; only the real set changed
    torch.testing.assert_close(smooth.targets.colours, plain.targets.colours)
    torch.testing.assert_close(smooth.targets.stacks, plain.targets.stacks)
    assert smooth.targets.real.shape == plain.targets.real.shape
    spread = [t.targets.real.std(dim=1).mean() for t in (plain, smooth)]
    assert spread[1] < 0.85 * spread[0], spread  # smoother patches (measured: 0.77 of the spread)
    # inpainting has no noise to smooth: the switch leaves it alone
    hole, _ = Degradation(task="inpaint", fill_ratio=0.05).apply(tiny, 0)
    inpaint = shrink(get_preset("fast-inpaint"), steps=2)
    blurred_inpaint = inpaint.replace(loss=dataclasses.replace(inpaint.loss, real_blur=1.5))
    a, b = Trainer(hole, inpaint, seed=0), Trainer(hole, blurred_inpaint, seed=0)
    torch.testing.assert_close(a.targets.real, b.targets.real)
    with np.testing.assert_raises_regex(ValueError, "loss.real_blur must be ≥ 0"):
        blurred.replace(loss=dataclasses.replace(blurred.loss, real_blur=-1.0))


def test_ensemble_averages_its_members_fitted_with_consecutive_seeds(tiny):
    from knitwork.fit import fit
    from knitwork.packs import fit_packed

    obs, truth = Degradation(task="denoise", sigma=40).apply(tiny, 3)
    one = _denoise(steps=30)
    three = one.replace(optim=dataclasses.replace(one.optim, ensemble=3))
    result = fit(obs, three, seed=5)
    assert result.members == 3 and result.config.optim.ensemble == 3
    members = fit_packed([obs] * 3, one, seeds=[5, 6, 7], pack=3)  # the same packed fits
    np.testing.assert_allclose(result.image, np.mean([m.image for m in members], axis=0), atol=1e-5)
    assert len({m.image.tobytes() for m in members}) == 3  # the seeds differ
    # the squared error is convex: the average is nearer the truth than the members on average
    # (strictly, since they differ)
    error = [float(np.mean((m.image - truth) ** 2)) for m in members]
    assert float(np.mean((result.image - truth) ** 2)) < np.mean(error)
    with np.testing.assert_raises_regex(ValueError, "a Trainer fits one member"):
        Trainer(obs, three, seed=5)
    with np.testing.assert_raises_regex(ValueError, "optim.ensemble must be ≥ 1"):
        dataclasses.replace(one.optim, ensemble=0)
