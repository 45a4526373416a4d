"""The losses of eq. 1-4: consistency, hole invariance, label smoothing, the α ramp."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from knitwork.config import Config, LossConfig, PatchConfig
from knitwork.degradation import Degradation
from knitwork.losses import (
    alpha_at,
    consistency_loss,
    discriminator_loss,
    generator_gan_loss,
    generator_losses,
)
from knitwork.patches import patch_stack
from knitwork.trainer import Trainer
from tests.conftest import shrink

PATCHES = [
    PatchConfig(size=3, scales=(1, 2, 4), blur=True),
    PatchConfig(size=5, scales=(1, 3), blur=False),
]


@pytest.mark.parametrize("cfg", PATCHES)
def test_consistency_is_zero_on_a_field_sampled_from_one_image(cfg):
    image = torch.rand(3, 13, 10, generator=torch.Generator().manual_seed(0))
    field, _ = patch_stack(image, None, cfg)
    assert consistency_loss(field, 13, 10, cfg).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("cfg", PATCHES)
def test_consistency_grows_when_one_patch_is_perturbed(cfg):
    image = torch.rand(3, 13, 10, generator=torch.Generator().manual_seed(0))
    field, _ = patch_stack(image, None, cfg)
    bumped = field.clone()
    bumped[57, :, -1] += 0.3  # one pixel's coarsest patch
    small = consistency_loss(bumped, 13, 10, cfg).item()
    bumped[57] += 0.3  # the whole stack of that pixel, its centre included
    assert 0 < small < consistency_loss(bumped, 13, 10, cfg).item()


def test_consistency_uses_the_last_row_and_column():
    """The authors' code drops them; a disagreement there must count."""
    cfg = PatchConfig(size=3, scales=(1, 2), blur=False)
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3))
    field, _ = patch_stack(image, None, cfg)
    corner = field.clone()
    corner[8 * 8 - 1, :, 1] += 0.5  # bottom-right pixel, scale-2 patch
    assert consistency_loss(corner, 8, 8, cfg).item() > 0


def _all_terms(observation, config: Config) -> dict[str, float]:
    trainer = Trainer(observation, config, seed=0)
    field = trainer.field()
    d_loss = trainer.discriminator_step(field)  # updates D; same start state in both calls
    pixels = trainer.model.pixels(field)
    logits = trainer.model.discriminator(field[trainer.targets.full])
    terms = generator_losses(
        field, pixels, logits, trainer.targets, config.loss, config.model.patches, step=0
    )
    return {"discriminator": d_loss.item(), **{k: v.item() for k, v in terms.items()}}


def test_changing_pixels_inside_the_hole_changes_no_loss(tiny):
    config = shrink(Config(loss=LossConfig(alpha=1.0, beta=1.0, gamma=1.0)))
    obs = Degradation(task="inpaint", fill_ratio=0.1).apply(tiny, 4)[0]
    noisy_hole = obs.image.copy()
    noisy_hole[obs.hole] = np.random.default_rng(5).random((obs.hole.sum(), 3))
    other = dataclasses.replace(obs, image=noisy_hole)
    first, second = _all_terms(obs, config), _all_terms(other, config)
    assert set(first) == {"discriminator", "recon", "consistency", "pixel", "gan", "total"}
    for name, value in first.items():
        assert second[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_discriminator_applies_one_sided_label_smoothing():
    real, fake = torch.tensor([4.0, -1.0, 0.5]), torch.tensor([-3.0, 2.0])
    loss = discriminator_loss(real, fake, label_smoothing=0.1).item()
    expected = F.binary_cross_entropy_with_logits(real, torch.full((3,), 0.9)) + (
        F.binary_cross_entropy_with_logits(fake, torch.zeros(2))
    )
    hard = discriminator_loss(real, fake, label_smoothing=0.0).item()
    assert loss == pytest.approx(expected.item())
    assert loss != pytest.approx(hard)
    # a very confident "real" is penalised with smoothing: the loss stops falling to zero
    assert discriminator_loss(torch.tensor([30.0]), torch.tensor([-30.0]), 0.1).item() > 0.3


def test_generator_gan_loss_wants_fakes_scored_real():
    assert generator_gan_loss(torch.tensor([10.0])).item() < 1e-4
    assert generator_gan_loss(torch.tensor([-10.0])).item() > 9


def test_alpha_ramp():
    ramp = LossConfig(alpha=2.0, alpha_ramp="sigmoid", alpha_ramp_mid=100, alpha_ramp_width=10)
    assert alpha_at(100, ramp) == pytest.approx(1.0)
    assert alpha_at(0, ramp) < 1e-3 < 1.999 < alpha_at(300, ramp)
    assert alpha_at(0, LossConfig(alpha=2.0)) == 2.0
