"""``loss.sr_guide``: SR's warm start towards the bicubic upsampling, fading to nothing."""

from __future__ import annotations

import dataclasses

import pytest

from knitwork.config import LossConfig
from knitwork.fit import fit
from knitwork.kernels import bicubic_upsample, degrade_sr, gaussian_kernel
from knitwork.losses import guide_weight
from knitwork.metrics import psnr
from knitwork.presets import get_preset
from knitwork.tasks import observe
from tests.conftest import example_image, learning_kernel, shrink


def test_the_weight_fades_linearly_to_nothing():
    config = LossConfig(sr_guide=2.0, sr_guide_steps=10)
    assert [guide_weight(s, config) for s in (0, 5, 10, 20)] == [2.0, 1.0, 0.0, 0.0]
    assert guide_weight(0, LossConfig()) == 0.0  # off by default


@pytest.mark.parametrize(("field", "value"), [("sr_guide", -1.0), ("sr_guide_steps", 0)])
def test_bad_guide_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"loss.{field}"):
        get_preset("fast-sr").replace(loss=LossConfig(**{field: value}))


def _fit(low, steps: int, **loss):
    base = learning_kernel(shrink(get_preset("fast-sr"), steps))  # its priors keep a gradient
    config = base.replace(loss=dataclasses.replace(base.loss, **loss))
    return fit(observe("sr", low, scale=2), config, seed=0)


def test_the_guide_alone_draws_the_bicubic_image_and_then_stops():
    _, low = degrade_sr(example_image("bird", 48), 2, gaussian_kernel(1.0))
    bicubic = bicubic_upsample(low, 2)
    guided = _fit(low, 80, alpha=0.0, beta=0.0, gamma=0.0, sr_guide=1.0, sr_guide_steps=1000)
    unguided = _fit(low, 80, alpha=0.0, beta=0.0, gamma=0.0)
    assert psnr(guided.image, bicubic) > 22 > psnr(unguided.image, bicubic) + 3
    faded = _fit(low, 6, sr_guide=1.0, sr_guide_steps=3)
    assert [("guide" in h) for h in faded.history] == [True] * 3 + [False] * 3
