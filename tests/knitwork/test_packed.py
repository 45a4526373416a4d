"""Packed fits: K images stepped as one batched model give each image its solo fit (PSNR within
0.2 dB, pixels close), across tasks, masks, crops and early stops; a pack's state continues
exactly; fits that cannot share a batch are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from knitwork.degradation import Degradation
from knitwork.memory import MAX_PACK, RUNTIME_BYTES, StepPlan, auto_pack, pack_share
from knitwork.metrics import psnr
from knitwork.packed import PackedTrainer
from knitwork.packs import fit_packed
from knitwork.presets import get_preset
from knitwork.trainer import Trainer
from tests.conftest import example_image, learning_kernel, shrink

NAMES = ("butterfly", "bird", "head")


def _cases(task: str, size: int = 24, **degradation):
    return [
        Degradation(task=task, **degradation).apply(example_image(name, size), seed)
        for seed, name in enumerate(NAMES)
    ]


def _config(task: str, steps: int, **optim):
    config = shrink(get_preset(f"fast-{task}"), steps=steps)
    if task == "sr":  # estimated kernels differ per image (no shared pack); learned ones pack
        config = learning_kernel(config)
    optim = {"precision": "fp32"} | optim  # bf16 (where the CPU has it) rounds pack and solo apart
    return config.replace(optim=dataclasses.replace(config.optim, **optim))


def _solo(cases, config):
    results = []
    for seed, (obs, _) in enumerate(cases):
        trainer = Trainer(obs, config, seed=seed)
        while not trainer.finished:
            trainer.step()
        results.append(trainer.result())
    return results


def _packed(cases, config):
    pack = PackedTrainer([Trainer(obs, config, seed=s) for s, (obs, _) in enumerate(cases)])
    while not pack.finished:
        pack.step()
    return pack.results()


@pytest.mark.parametrize(
    "task, optim, degradation",
    [
        ("denoise", {"lr_decay": "cosine"}, {}),
        ("inpaint", {}, {"fill_ratio": 0.08}),  # a hole per image: real sets of unequal size
        ("denoise", {"crop_size": 16}, {}),  # crops at different places: padded whole patches
        ("inpaint", {"schedule": "alternate"}, {"fill_ratio": 0.05}),
        ("sr", {}, {"scale": 2}),  # blind: the learned kernels are packed too
        ("sr", {"crop_size": 16}, {"scale": 2}),  # LR windows: padded real sets
        ("denoise", {"ema": 0.9, "early_stop": "holdout", "patience": 2}, {}),  # averaged, held out
        ("denoise", {"ema": 0.9, "early_stop": "holdout", "crop_size": 16}, {}),
    ],
)
def test_each_packed_image_equals_its_solo_fit(task, optim, degradation):
    cases = _cases(task, **degradation)
    config = _config(task, steps=8, **optim)
    for (_, truth), solo, packed in zip(
        cases, _solo(cases, config), _packed(cases, config), strict=True
    ):
        assert packed.packed == len(cases) and solo.packed == 1
        assert abs(psnr(packed.image, truth) - psnr(solo.image, truth)) < 0.2
        assert np.abs(packed.image - solo.image).mean() < 2e-3
        for mine, theirs in zip(packed.history, solo.history, strict=True):
            assert mine.keys() == theirs.keys()
            np.testing.assert_allclose(  # sums in another order: rounding, not drift
                list(mine.values()), list(theirs.values()), rtol=2e-2, atol=1e-5
            )


def test_packed_early_stop_keeps_each_images_stop_and_weights():
    cases = _cases("denoise", sigma=40)
    config = _config("denoise", steps=300, early_stop="noise", log_every=50)
    solo, packed = _solo(cases, config), _packed(cases, config)
    assert any(r.stopped_at for r in solo), "the test needs a fit that stops early"
    for (_, truth), a, b in zip(cases, solo, packed, strict=True):
        # batched products round differently from single ones, and under the MSE loss the
        # residual crosses the noise level slowly: the crossing may move by a step or two
        assert (a.stopped_at is None) == (b.stopped_at is None)
        assert a.stopped_at is None or abs(b.stopped_at - a.stopped_at) <= 5
        assert abs(psnr(a.image, truth) - psnr(b.image, truth)) < 0.2


def test_a_synced_pack_continues_exactly_from_its_trainers_state():
    cases = _cases("inpaint", fill_ratio=0.05)
    config = _config("inpaint", steps=6)
    straight = PackedTrainer([Trainer(o, config, seed=s) for s, (o, _) in enumerate(cases)])
    for _ in range(6):
        straight.step()
    first = PackedTrainer([Trainer(o, config, seed=s) for s, (o, _) in enumerate(cases)])
    for _ in range(3):
        first.step()
    first.sync()
    states = [t.state_dict() for t in first.trainers]
    resumed = []
    for s, ((obs, _), state) in enumerate(zip(cases, states, strict=True)):
        trainer = Trainer(obs, config, seed=s + 50)
        trainer.load_state_dict(state)
        resumed.append(trainer)
    second = PackedTrainer(resumed)
    for _ in range(3):
        second.step()
    assert second.finished
    for a, b in zip(straight.results(), second.results(), strict=True):
        np.testing.assert_allclose(a.image, b.image, atol=1e-6)


def test_fits_that_cannot_share_a_batch_are_refused():
    small, large = _cases("denoise", 16)[0][0], _cases("denoise", 24)[0][0]
    config = _config("denoise", steps=2)
    with pytest.raises(ValueError, match=r"cannot be packed.*sizes"):
        PackedTrainer([Trainer(small, config), Trainer(large, config)])
    other = config.replace(optim=dataclasses.replace(config.optim, lr=1e-4))
    with pytest.raises(ValueError, match="configs differ"):
        PackedTrainer([Trainer(small, config), Trainer(small, other)])
    with pytest.raises(ValueError, match="at least one"):
        PackedTrainer([])


def test_mixed_sizes_pack_with_crops():
    cases = [
        Degradation(task="denoise").apply(example_image(name, size), seed)
        for seed, (name, size) in enumerate([("butterfly", 24), ("bird", 40)])
    ]
    config = _config("denoise", steps=8, crop_size=16)
    for (obs, truth), solo, packed in zip(
        cases, _solo(cases, config), _packed(cases, config), strict=True
    ):
        assert packed.image.shape == obs.image.shape
        assert abs(psnr(packed.image, truth) - psnr(solo.image, truth)) < 0.2


def test_fit_packed_groups_what_can_share_a_batch_and_keeps_the_input_order():
    sizes = [("butterfly", 16), ("bird", 24), ("head", 16), ("woman", 16)]
    cases = [
        Degradation(task="denoise").apply(example_image(n, s), i) for i, (n, s) in enumerate(sizes)
    ]
    config = _config("denoise", steps=2)
    results = fit_packed([o for o, _ in cases], config, seeds=[0, 1, 2, 3], pack=2)
    assert [r.image.shape[0] for r in results] == [16, 24, 16, 16]
    assert [r.packed for r in results] == [2, 1, 2, 1]  # 16 px: a pack of 2, then one left
    assert [r.seed for r in results] == [0, 1, 2, 3]


def test_automatic_pack_is_one_on_a_cpu_and_fills_a_gpu_step_within_the_budget():
    plan = StepPlan(
        budget=8 * 2**30, fixed=RUNTIME_BYTES + 2**20, per_coordinate=4096,
        crop=None, coordinates=64 * 64, render_chunk=4096,
    )  # fmt: skip
    assert auto_pack("cpu", plan, images=100) == 1
    assert auto_pack("cuda", plan, images=100) == MAX_PACK  # 64 small fits fill a step
    assert auto_pack("cuda", plan, images=3) == 3
    tight = dataclasses.replace(plan, budget=RUNTIME_BYTES + 3 * (plan.peak - RUNTIME_BYTES))
    assert auto_pack("cuda", tight, images=100) == 3  # memory allows three at full size
    assert pack_share(RUNTIME_BYTES + 4000, 4) == RUNTIME_BYTES + 1000
