"""The ablation's stages (knitwork.ablation): each adds exactly its named fields of the preset
to the previous stage, the last is the preset, and a short fit of each stage has exactly the
loss terms its components bring."""

from __future__ import annotations

import dataclasses

import pytest

from knitwork.ablation import ABLATION_CHANGES, ABLATION_STAGES, ablation_config
from knitwork.config import as_baseline
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


@pytest.mark.parametrize(
    ("preset", "alpha"),
    [
        ("fast-inpaint", {"loss.alpha"}),
        ("fast-denoise", {"loss.alpha"}),
        ("paper-inpaint", {"loss.alpha", "loss.alpha_ramp"}),  # its α ramps up (sigmoid)
    ],
)
def test_each_stage_adds_exactly_its_fields(preset, alpha):
    config = get_preset(preset)
    expected = {
        "patches": PATCHES,
        "consistency": alpha,
        "reconstructor": {"model.reconstructor", "loss.beta"},
        "knitwork": {"loss.gamma"},
    }
    stages = [ablation_config(config, s) for s in ABLATION_STAGES]
    assert stages[0] == as_baseline(config) and stages[-1] == config
    for name, before, after in zip(ABLATION_STAGES[1:], stages[:-1], stages[1:], strict=True):
        assert changed(before, after) == expected[name], name
        named = ABLATION_CHANGES[name]
        assert all(any(k.startswith(f) for f in named) for k in expected[name])
    patches = stages[1]
    assert patches.model.reconstructor == "none"
    assert patches.model.patches == config.model.patches
    assert (patches.loss.alpha, patches.loss.beta, patches.loss.gamma) == (0, 0, 0)


@pytest.mark.parametrize(
    ("preset", "degradation"),
    [
        ("fast-inpaint", Degradation(task="inpaint", fill_ratio=0.04)),
        ("fast-denoise", Degradation(task="denoise", sigma=25)),
    ],
)
def test_each_stage_fits_with_its_own_loss_terms(preset, degradation):
    """``patches`` draws each stack's centre pixel and learns from the patch reconstruction
    loss alone; each later stage brings its term."""
    obs, truth = degradation.apply(example_image("bird", 16), 3)
    config = get_preset(preset).with_steps(2).with_device("cpu")
    config = config.replace(optim=dataclasses.replace(config.optim, log_every=1))
    terms = {}
    for stage in ABLATION_STAGES:
        result = fit(obs, ablation_config(config, stage), seed=1, ground_truth=truth)
        terms[stage] = set(result.history[-1]) - {"step", "psnr", "discriminator", "holdout"}
        if stage == "patches":
            assert result.model.reconstructor is None and result.model.discriminator is None
    assert terms == {
        "mlp": {"recon", "total"},
        "patches": {"recon", "total"},
        "consistency": {"recon", "consistency", "total"},
        "reconstructor": {"recon", "consistency", "pixel", "total"},
        "knitwork": {"recon", "consistency", "pixel", "gan", "total"},
    }


def test_bad_stage_or_baseline_preset_is_refused():
    with pytest.raises(ValueError, match="unknown ablation stage 'gan'; choose from mlp"):
        ablation_config(get_preset("fast-inpaint"), "gan")
    with pytest.raises(ValueError, match="drop --baseline"):
        ablation_config(as_baseline(get_preset("fast-inpaint")), "patches")
