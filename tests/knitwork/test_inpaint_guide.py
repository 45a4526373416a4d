"""``loss.inpaint_guide``: inpainting's pull towards the biharmonic fill, on the hole only."""

from __future__ import annotations

import dataclasses

import pytest

from knitwork.classical import inpaint_biharmonic
from knitwork.config import LossConfig
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.losses import guide_weight
from knitwork.metrics import psnr
from knitwork.presets import get_preset
from tests.conftest import example_image, shrink


def test_the_weight_holds_or_fades_linearly():
    steady = LossConfig(inpaint_guide=2.0)
    assert [guide_weight(s, steady, True, 500) for s in (0, 500, 10**6)] == [2.0] * 3
    fading = LossConfig(inpaint_guide=2.0, inpaint_guide_fade=0.5)  # half of the fit's steps
    assert [guide_weight(s, fading, True, 20) for s in (0, 5, 10, 20)] == [2.0, 1.0, 0, 0]
    assert [guide_weight(s, fading, True, 40) for s in (0, 10, 20)] == [2.0, 1.0, 0]
    assert guide_weight(0, steady) == 0.0  # SR's guide is another field
    assert guide_weight(0, LossConfig(), inpaint=True) == 0.0  # off by default


@pytest.mark.parametrize(
    ("field", "value"), [("inpaint_guide", -1.0), ("inpaint_guide_fade", -0.5)]
)
def test_bad_guide_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"loss.{field}"):
        get_preset("fast-inpaint").replace(loss=LossConfig(**{field: value}))


def _hole_psnr_to_biharmonic(crop: int, **loss) -> tuple[float, list[dict]]:
    obs, _ = Degradation(task="inpaint", fill_ratio=0.08).apply(example_image("bird", 32), 0)
    base = shrink(get_preset("fast-inpaint"), 60)
    optim = dataclasses.replace(base.optim, crop_size=crop)
    config = base.replace(loss=dataclasses.replace(base.loss, **loss), optim=optim)
    result = fit(obs, config, seed=0)
    return psnr(result.image, inpaint_biharmonic(obs), obs.hole), result.history


@pytest.mark.parametrize("crop", [0, 24])  # full-grid steps, and sampled 24-px crops
def test_the_guide_draws_the_hole_towards_the_biharmonic_fill(crop):
    quiet = {"alpha": 0.0, "gamma": 0.0}  # nothing else speaks for the hole
    steady = {"inpaint_guide": 10.0, "inpaint_guide_fade": 0.0}
    guided, history = _hole_psnr_to_biharmonic(crop, **steady, **quiet)
    unguided, _ = _hole_psnr_to_biharmonic(crop, inpaint_guide=0.0, **quiet)
    assert guided > unguided + 3
    assert all("guide" in h for h in history)


def test_a_fading_guide_stops_at_its_step():
    _, history = _hole_psnr_to_biharmonic(0, inpaint_guide=1.0, inpaint_guide_fade=0.5)
    logged = [h["step"] for h in history if "guide" in h]  # a history entry counts steps done
    assert logged == list(range(1, 31)) and len(history) == 60
