"""Memory: the estimate bounds what a fit uses, full-grid steps where they fit, crops (whose
targets equal the whole image's) where they do not, and a clear refusal where nothing fits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from knitwork.degradation import Degradation
from knitwork.fields import parse_size
from knitwork.fit import fit
from knitwork.memory import MemoryBudgetError, plan_steps
from knitwork.presets import get_preset
from knitwork.targets import build_targets, crop_targets
from knitwork.trainer import Trainer
from tests.conftest import example_image, shrink

ROOT = Path(__file__).resolve().parents[2]
MEASURE = """
import json, resource, sys, numpy as np, torch
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.presets import get_preset
torch.set_num_threads(2)
side, budget, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
clean = rng.random((side, side, 3), dtype=np.float32)
obs, _ = Degradation(task="denoise").apply(clean, 0)
config = get_preset("fast-denoise").with_steps(steps).with_device("cpu")
optim = config.optim.__class__(**(config.optim.__dict__ | {"max_memory": budget}))
config = config.replace(optim=optim)
result = fit(obs, config, seed=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "crop": result.crop, "shape": list(result.image.shape)}))
"""


def with_memory(config, max_memory: str, crop_size: int = 0):
    optim = config.optim.__class__(
        **(config.optim.__dict__ | {"max_memory": max_memory, "crop_size": crop_size})
    )
    return config.replace(optim=optim)


def plan(config, side: int, budget: str, crops: bool = True):
    return plan_steps(
        config,
        channels=3,
        grid=(side, side),
        input_pixels=side * side,
        parameters=500_000,
        budget=parse_size(budget),
        crops=crops,
    )


def test_full_grid_when_it_fits_crops_when_not_refusal_when_nothing_fits():
    config = get_preset("fast-inpaint")
    small, large = plan(config, 64, "8G"), plan(config, 4000, "4G")
    assert small.crop is None and small.coordinates == 64 * 64
    assert large.crop is not None and large.peak <= large.budget
    assert 32 <= large.crop[0] < 4000 and large.crop[0] == large.crop[1]
    with pytest.raises(MemoryBudgetError, match=r"--max-memory"):
        plan(config, 4000, "1G")  # the fixed part alone is over
    with pytest.raises(MemoryBudgetError, match=r"no crop steps"):
        plan(config, 2400, "2G", crops=False)  # the MLP baseline's SR: full grid or nothing


def test_super_resolution_over_the_budget_is_refused_before_it_allocates():
    obs = Degradation(task="sr", scale=100).observe(example_image("bird", 24))  # a real input
    config = with_memory(get_preset("fast-sr"), "2G")
    with pytest.raises(MemoryBudgetError, match=r"2400×2400 need about .* GiB, and even"):
        Trainer(obs, config, seed=0)  # crops of whole LR pixels: at least 3200² at ×100


@pytest.mark.parametrize("box", [(0, 0, 8, 10), (5, 3, 9, 8), (12, 11, 12, 13)])
def test_sr_crop_targets_compare_the_lr_pixels_the_whole_image_would(box):
    from knitwork.kernels import downsample, gaussian_kernel
    from knitwork.targets import sr_crop_targets

    scale, kernel = 2, torch.from_numpy(gaussian_kernel(1.2))
    hr = torch.rand(3, 48, 50, generator=torch.Generator().manual_seed(0))
    low = downsample(hr, kernel, scale)  # (3, 24, 25)
    reach = max(kernel.shape) // 2
    top, left, rows, cols = box
    targets = sr_crop_targets(low, box, scale, reach, get_preset("fast-sr").model.patches)
    window = hr[:, scale * top : scale * (top + rows), scale * left : scale * (left + cols)]
    valid = targets.low_res_weight.bool()
    assert valid.any() and not valid.all()  # an inner crop loses its rim, not its middle
    assert torch.equal(targets.low_res, low[:, top : top + rows, left : left + cols])
    torch.testing.assert_close(
        downsample(window, kernel, scale)[:, valid], targets.low_res[:, valid]
    )
    assert (targets.height, targets.width) == (scale * rows, scale * cols)
    assert len(targets.real) > 0 and targets.full.shape == (scale * rows * scale * cols,)


@pytest.mark.parametrize("kernel", ["learned", "gaussian:1"])
def test_super_resolution_takes_crop_steps_when_asked_or_over_budget(kernel):
    obs = Degradation(task="sr", scale=2, kernel=kernel).observe(example_image("bird", 40))
    config = with_memory(get_preset("fast-sr").with_steps(6).with_device("cpu"), "auto", 33)
    first, again = fit(obs, config, seed=1), fit(obs, config, seed=1)
    assert first.crop == (32, 32)  # whole LR pixels: 33 → 32
    assert first.image.shape == (80, 80, 3) and np.isfinite(first.image).all()
    np.testing.assert_array_equal(first.image, again.image)
    big = Degradation(task="sr", scale=4).observe(example_image("bird", 128))  # 512² output
    plan = Trainer(big, with_memory(get_preset("fast-sr"), "2G"), seed=0).plan
    assert plan.crop is not None and plan.crop[0] % 4 == 0 and plan.peak <= plan.budget


@pytest.mark.parametrize("box", [(0, 0, 12, 16), (9, 5, 14, 10), (20, 18, 12, 14)])
def test_crop_targets_equal_the_whole_images(tiny, box):
    obs, _ = Degradation(task="inpaint", fill_ratio=0.1).apply(tiny, 2)
    config = shrink(get_preset("fast-inpaint"))
    trainer = Trainer(obs, config, seed=0)
    whole = build_targets(obs, trainer.model, torch.device("cpu"))
    image = torch.from_numpy(obs.image).permute(2, 0, 1)
    crop = crop_targets(image, torch.from_numpy(obs.known), box, config.model.patches)
    top, left, ch, cw = box
    rows = torch.arange(top, top + ch)[:, None] * 32 + torch.arange(left, left + cw)[None, :]
    index = rows.flatten()
    torch.testing.assert_close(crop.stacks, whole.stacks[index])
    assert torch.equal(crop.stack_known, whole.stack_known[index])
    assert torch.equal(crop.full, whole.full[index])
    torch.testing.assert_close(crop.colours, whole.colours[index])
    assert (crop.height, crop.width) == (ch, cw)


def test_crop_steps_fit_and_are_seeded(tiny):
    obs, _ = Degradation(task="inpaint", fill_ratio=0.05).apply(tiny, 1)
    config = with_memory(get_preset("fast-inpaint").with_steps(20).with_device("cpu"), "auto", 16)
    first, again = fit(obs, config, seed=3), fit(obs, config, seed=3)
    assert first.crop == (16, 16) and np.isfinite(first.image).all()
    np.testing.assert_array_equal(first.image, again.image)
    assert first.history and "psnr" not in first.history[-1]  # no whole-image score per step


def _measure(side: int, budget: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(side), budget, str(steps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_estimate_bounds_a_full_grid_fit():
    config = with_memory(get_preset("fast-denoise"), "8G")
    estimate = plan(config, 128, "8G")
    measured = _measure(128, "8G", 3)
    assert measured["crop"] is None
    assert measured["peak"] <= estimate.peak <= 3 * measured["peak"], (measured, estimate.peak)


def test_a_large_image_stays_under_its_budget():
    """1.2 megapixels at 1.5 GiB: full-grid steps would need several times that."""
    budget = "1.5G"
    assert plan(get_preset("fast-denoise"), 1100, "64G").peak > 3 * parse_size(budget)
    measured = _measure(1100, budget, 4)
    assert measured["crop"] is not None and measured["shape"] == [1100, 1100, 3]
    assert measured["peak"] <= parse_size(budget), measured
