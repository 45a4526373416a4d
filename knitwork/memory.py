"""Memory: what a fit will need, estimated before it starts, and the step it can afford.

A full-grid step (the paper's protocol) holds activations for every pixel at once, so its
memory grows with the image; a crop step fits a sampled window of the coordinate grid and
costs what the window costs. ``plan_steps`` estimates the peak from the observation, the task,
the output size and the config, takes full-grid steps when they fit the budget, else the
largest square crop that does, and refuses (``MemoryBudgetError``) what cannot fit at all,
saying what to change.

The estimate counts the values each coordinate keeps alive during one step (Fourier features,
the patch MLP's activations and their gradients, the patch field and every loss term built on
it, the reconstructor and the discriminator) at 4 bytes, plus what does not depend on the
step: the runtime, the weights with their gradients and Adam moments, the images. It is meant
as an upper bound: tests/knitwork/test_memory.py checks measured peaks against it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from knitwork.config import Config, parse_size
from knitwork.patches import stack_width

FLOAT = 4  # bytes per value
RUNTIME_BYTES = 450 * 2**20  # Python, torch and their libraries, before any tensor
# Values alive per unit at the step's peak, set from measured peaks (fast-denoise and
# paper-inpaint, 64-512 px: docs/benchmarks/performance.md) so that the estimate stays above
# them (1.1-1.8×) while following the config:
MLP_TERMS = 3  # per hidden unit: its activation, the gradient, a pre-activation in flight
FIELD_TERMS = 10  # per patch-field value: output, sigmoid grad, consistency and recon terms
INPUT_BYTES = 48  # per input pixel: decoded float RGB, the observation, its mask, the file's
# (32 before a 12-MP inpainting with a mask file peaked at 3,038 MiB of a 3 GiB budget)
OUTPUT_BYTES = 64  # per output pixel: the render and its chunks, raw and result, the file's
OPTIMISER_COPIES = 4  # weights, gradients, Adam's two moments
# bf16 autocast on a CPU: a 128² fast-denoise fit peaked at 930 MiB once in a full test run
# and at 1,082 MiB in CI's run of 2026-12-01 (670 MiB alone, like fp32), so bf16 fits keep
# this much more in reserve
AUTOCAST_BYTES = 512 * 2**20
DEFAULT_FRACTION = 0.8  # of the memory available when the fit starts
MIN_CROP_SIDE = 32  # smaller crops leave the discriminator too few whole patches
RENDER_TERMS = 2  # a render chunk keeps activations only for its forward pass
RENDER_CHUNK = 65536  # the most coordinates drawn in one forward pass


class MemoryBudgetError(ValueError):
    """The fit cannot fit the memory budget; the message says what to change."""


@dataclass(frozen=True, kw_only=True)
class StepPlan:
    budget: int  # bytes the fit may use (peak resident memory)
    fixed: int  # bytes that do not depend on the step's size
    per_coordinate: int  # bytes per fitted coordinate in one step
    crop: tuple[int, int] | None  # (height, width) of the sampled window; None: full grid
    coordinates: int  # fitted per step
    render_chunk: int  # coordinates per forward pass when drawing the result

    @property
    def peak(self) -> int:
        """The estimated peak of the fit."""
        return self.fixed + self.per_coordinate * self.coordinates

    def describe(self) -> str:
        mode = "full grid" if self.crop is None else f"{self.crop[1]}×{self.crop[0]} crops"
        return f"{mode}, estimated peak {gib(self.peak)} of a {gib(self.budget)} budget"


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def available_bytes(device: str = "cpu") -> int:
    """Memory free for a fit on ``device`` now: MemAvailable on the CPU, free GPU memory."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget_bytes(setting: str, device: str = "cpu") -> int:
    """The budget for ``optim.max_memory``: a size, or ``auto`` (a fraction of what is free)."""
    if setting == "auto":
        return int(available_bytes(device) * DEFAULT_FRACTION)
    return parse_size(setting)


def per_coordinate_bytes(config: Config, channels: int) -> int:
    """Bytes one fitted coordinate keeps alive in one step (an upper bound)."""
    m = config.model
    stack = stack_width(channels, m.patches)
    values = 2 * m.encoding.features + MLP_TERMS * m.hidden * (m.layers - 1)
    values += FIELD_TERMS * stack
    if m.reconstructor != "none":
        values += MLP_TERMS * (m.reconstructor_width * (m.reconstructor_depth - 1) + channels)
    if config.loss.gamma > 0:  # fakes in the D and G passes, and the real set
        values += 2 * MLP_TERMS * sum(m.discriminator_hidden) + stack
    return values * FLOAT


def render_bytes_per_coordinate(config: Config, channels: int) -> int:
    m = config.model
    values = 2 * m.encoding.features + m.hidden * (m.layers - 1)
    values += stack_width(channels, m.patches) + m.reconstructor_width + channels
    return RENDER_TERMS * values * FLOAT


def fixed_bytes(config: Config, parameters: int, input_pixels: int, output_pixels: int) -> int:
    """Runtime, weights with gradients and Adam moments, and the full-size images (and the
    bf16 kernels' workspace when the fit may run in bf16)."""
    images = INPUT_BYTES * input_pixels + OUTPUT_BYTES * output_pixels
    autocast = AUTOCAST_BYTES if config.optim.precision != "fp32" else 0
    return RUNTIME_BYTES + autocast + OPTIMISER_COPIES * parameters * FLOAT + images


def crop_side_floor(config: Config) -> int:
    """The smallest crop side: room for whole patch stacks at the coarsest scale."""
    p = config.model.patches
    reach = max(p.scales) * (p.size // 2)
    return max(MIN_CROP_SIDE, 4 * reach + 1)


def plan_steps(
    config: Config,
    *,
    channels: int,
    grid: tuple[int, int],
    input_pixels: int,
    parameters: int,
    budget: int,
    crops: bool = True,
    crop_unit: int = 1,
) -> StepPlan:
    """Full-grid steps when they fit ``budget``, else the largest square crop of ``grid`` (the
    fitted coordinate grid) that does; ``crops`` False allows full-grid steps only.
    ``crop_unit``: super-resolution's scale (its crops are whole LR pixels, so the smallest
    crop is that many times larger)."""
    h, w = grid
    fixed = fixed_bytes(config, parameters, input_pixels, h * w)
    per = per_coordinate_bytes(config, channels)
    chunk = max(
        1, min(2**16, (budget - fixed) // max(1, render_bytes_per_coordinate(config, channels)))
    )
    plan = dict(budget=budget, fixed=fixed, per_coordinate=per, render_chunk=int(chunk))
    if fixed + per * h * w <= budget:
        return StepPlan(**plan, crop=None, coordinates=h * w)
    floor = crop_side_floor(config) * crop_unit
    side = math.isqrt(max(0, (budget - fixed) // per))
    need = f"full-grid steps on {w}×{h} need about {gib(fixed + per * h * w)}"
    if not crops:
        raise MemoryBudgetError(
            f"{need}, over the {gib(budget)} budget (the MLP baseline's super-resolution has "
            "no crop steps): give more memory (--max-memory), or a smaller image or --scale"
        )
    if side < floor or min(h, w) < floor:
        smallest = fixed + per * floor * floor
        raise MemoryBudgetError(
            f"{need}, and even {floor}×{floor} crops need {gib(smallest)}: the budget is "
            f"{gib(budget)}. Give more memory (--max-memory), or a smaller image or --scale"
        )
    ch, cw = min(side, h), min(side, w)
    return StepPlan(**plan, crop=(ch, cw), coordinates=ch * cw)


# Packed fits (knitwork.packed): a GPU step wants enough coordinates to fill the device; a
# CPU core is already busy with one image's step (docs/benchmarks/performance.md, "Packed
# fits"), so packing pays on GPUs only.
PACK_COORDINATES = 2**18  # coordinates per packed GPU step worth aiming for (4 × 256²)
MAX_PACK = 64


def pack_share(budget: int, k: int) -> int:
    """Each of ``k`` packed fits' share of ``budget``: the runtime is counted once."""
    return RUNTIME_BYTES + max(0, budget - RUNTIME_BYTES) // max(1, k)


def auto_pack(device: str, plan: StepPlan, images: int) -> int:
    """How many fits like ``plan`` to pack on ``device``: 1 on a CPU; on a GPU enough to fill
    a step (``PACK_COORDINATES``), as many as the budget holds at full size."""
    if not device.startswith("cuda") or images < 2:
        return 1
    by_size = PACK_COORDINATES // max(1, plan.coordinates)
    by_memory = max(0, plan.budget - RUNTIME_BYTES) // max(1, plan.peak - RUNTIME_BYTES)
    return int(max(1, min(by_size, by_memory, MAX_PACK, images)))
