"""The Trainer: its state continues a fit exactly, it leaves the caller's RNG alone, it owns
the stop rule, and saved models rebuild from the structure they carry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from knitwork.checkpoint import load_model, model_bytes, save_model
from knitwork.config import as_baseline
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.presets import get_preset
from knitwork.trainer import Trainer
from tests.conftest import example_image, learning_kernel, shrink


def _run(trainer: Trainer, steps: int) -> None:
    for _ in range(steps):
        trainer.step()


@pytest.mark.parametrize("task, crop", [("inpaint", 0), ("sr", 0), ("denoise", 16)])
def test_state_dict_continues_the_fit_exactly(tiny, task, crop):
    obs, _ = Degradation(task=task, fill_ratio=0.05).apply(tiny, 1)
    config = shrink(get_preset(f"fast-{task}"), steps=6)
    config = config.replace(optim=dataclasses.replace(config.optim, crop_size=crop))
    straight = Trainer(obs, config, seed=3)
    _run(straight, 6)
    first = Trainer(obs, config, seed=3)
    _run(first, 3)
    state = first.state_dict()
    resumed = Trainer(obs, config, seed=99)  # other weights: the state must replace them all
    resumed.load_state_dict(state)
    assert resumed.steps_done == 3 and not resumed.finished
    _run(resumed, 3)
    assert resumed.finished and resumed.steps_done == 6
    np.testing.assert_array_equal(resumed.restored(), straight.restored())
    assert [h["total"] for h in resumed.history] == [h["total"] for h in straight.history]


def test_trainer_leaves_the_callers_random_state_alone(tiny):
    obs, _ = Degradation(task="denoise").apply(tiny, 0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Trainer(obs, shrink(get_preset("fast-denoise")), seed=7)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_trainer_owns_the_stop_and_refuses_steps_after_it(tiny):
    obs, _ = Degradation(task="denoise", sigma=40).apply(tiny, 3)
    config = get_preset("fast-denoise").with_steps(400)
    config = config.replace(optim=config.optim.__class__(
        **(config.optim.__dict__ | {"early_stop": "noise", "device": "cpu"})
    ))  # fmt: skip
    trainer = Trainer(obs, config, seed=0)
    while not trainer.finished:
        trainer.step()
    assert trainer.stopped_at is not None and trainer.steps_done == trainer.stopped_at < 400
    with pytest.raises(RuntimeError, match="finished"):
        trainer.step()
    assert fit(obs, config, seed=0).stopped_at == trainer.stopped_at  # fit is the same loop


@pytest.mark.parametrize("baseline", [False, True])
def test_saved_model_carries_its_structure(tmp_path, baseline):
    clean = example_image("bird", 24)
    obs, _ = Degradation(task="sr", scale=2).apply(clean, 0)  # blind: a learned kernel
    config = learning_kernel(shrink(get_preset("fast-sr"), steps=2))
    result = fit(obs, as_baseline(config) if baseline else config, seed=5)
    save_model(result, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["structure"] == result.model.structure()
    assert (payload["structure"]["kernel_scale"] is None) == baseline
    assert payload["structure"]["discriminator"] == (not baseline)
    model, loaded_config, meta = load_model(tmp_path / "m.pt")
    assert loaded_config == result.config and meta["seed"] == 5 and meta["scale"] == 2
    assert (model.downsampler is None) == baseline
    np.testing.assert_allclose(model.render(24, 24).numpy(), result.raw, atol=1e-6)
    assert model_bytes(result)[:2] == (tmp_path / "m.pt").read_bytes()[:2]
