"""The ablation's stages (knitwork.ablation): each adds exactly its named fields of the preset
to the previous stage, the last is the preset, and a short fit of each stage has exactly the
loss terms its components bring."""

from __future__ import annotations

import dataclasses

import pytest

from knitwork.ablation import ABLATION_CHANGES, ablation_config, ablation_stages
from knitwork.config import Config, as_baseline
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.presets import get_preset
from tests.conftest import example_image


def flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed(a, b) -> set[str]:
    """The dotted fields whose values differ between configs ``a`` and ``b``."""
    flat_a, flat_b = flat(a.to_dict()), flat(b.to_dict())
    return {k for k in flat_a if flat_a[k] != flat_b[k]}


PATCHES = {"model.method", "model.patches.size", "model.patches.scales", "model.patches.blur"}


GUIDE = {"loss.inpaint_guide", "loss.inpaint_guide_fade"}


def _loss(name: str, **fields) -> Config:
    preset = get_preset(name)
    return preset.replace(loss=dataclasses.replace(preset.loss, **fields))


@pytest.mark.parametrize(
    ("config", "alpha", "guide", "gamma"),
    [
        (_loss("fast-denoise"), {"loss.alpha"}, None, {"loss.gamma"}),
        (_loss("paper-inpaint"), {"loss.alpha", "loss.alpha_ramp"}, None, {"loss.gamma"}),
        (_loss("fast-inpaint", inpaint_guide=0.0, inpaint_guide_fade=0.0, gamma=1e-3),
         {"loss.alpha"}, None, {"loss.gamma"}),
        (_loss("fast-inpaint", inpaint_guide=1.0, inpaint_guide_fade=0.25, gamma=1e-3),
         {"loss.alpha"}, GUIDE, {"loss.gamma"}),
        # γ 0: the guide is the last change, shown as the preset's own stage
        (_loss("fast-inpaint", inpaint_guide=1.0, inpaint_guide_fade=0.25, gamma=0.0),
         {"loss.alpha"}, None, GUIDE),
    ],
)  # fmt: skip
def test_each_stage_adds_exactly_its_fields(config, alpha, guide, gamma):
    expected = {
        "patches": PATCHES,
        "consistency": alpha,
        "reconstructor": {"model.reconstructor", "loss.beta"},
        "guide": guide,
        "knitwork": gamma,
    }
    expected = {k: v for k, v in expected.items() if v is not None}
    assert ablation_stages(config) == ("mlp", *expected)
    stages = [ablation_config(config, s) for s in ablation_stages(config)]
    assert stages[0] == as_baseline(config) and stages[-1] == config
    for name, before, after in zip(expected, stages[:-1], stages[1:], strict=True):
        assert changed(before, after) == expected[name], name
    named = [f for fields in ABLATION_CHANGES.values() for f in fields]
    for fields in expected.values():  # every change is a field some stage names
        assert all(any(k.startswith(f) for f in named) for k in fields)
    patches = stages[1]
    assert patches.model.reconstructor == "none"
    assert patches.model.patches == config.model.patches
    assert (patches.loss.alpha, patches.loss.beta, patches.loss.gamma) == (0, 0, 0)
    assert as_baseline(config).loss.inpaint_guide == 0  # the MLP has no guide


BASE_TERMS = {
    "mlp": {"recon", "total"},
    "patches": {"recon", "total"},
    "consistency": {"recon", "consistency", "total"},
    "reconstructor": {"recon", "consistency", "pixel", "total"},
}


@pytest.mark.parametrize(
    ("config", "degradation", "later"),
    [
        (_loss("fast-inpaint", inpaint_guide=1.0, inpaint_guide_fade=0.0, gamma=1e-3),
         Degradation(task="inpaint", fill_ratio=0.04),
         {"guide": {"recon", "consistency", "pixel", "guide", "total"},
          "knitwork": {"recon", "consistency", "pixel", "guide", "gan", "total"}}),
        (_loss("fast-denoise", gamma=1e-3), Degradation(task="denoise", sigma=25),
         {"knitwork": {"recon", "consistency", "pixel", "gan", "total"}}),
    ],
)  # fmt: skip
def test_each_stage_fits_with_its_own_loss_terms(config, degradation, later):
    """``patches`` draws each stack's centre pixel and learns from the patch reconstruction
    loss alone; each later stage brings its term."""
    obs, truth = degradation.apply(example_image("bird", 16), 3)
    config = config.with_steps(2).with_device("cpu")
    config = config.replace(optim=dataclasses.replace(config.optim, log_every=1))
    terms = {}
    for stage in ablation_stages(config):
        result = fit(obs, ablation_config(config, stage), seed=1, ground_truth=truth)
        terms[stage] = set(result.history[-1]) - {"step", "psnr", "discriminator", "holdout"}
        if stage == "patches":
            assert result.model.reconstructor is None and result.model.discriminator is None
    assert terms == BASE_TERMS | later


def test_bad_stage_or_baseline_preset_is_refused():
    with pytest.raises(ValueError, match="unknown ablation stage 'gan'; choose from mlp"):
        ablation_config(get_preset("fast-inpaint"), "gan")
    with pytest.raises(ValueError, match="drop --baseline"):
        ablation_config(as_baseline(get_preset("fast-inpaint")), "patches")
