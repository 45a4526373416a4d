"""Size a Deep Image Prior benchmark run on this machine: seconds per DIP step at a few sizes,
then one full fit per task on a small image, with PSNR along the way.

    python benchmarks/dip_probe.py [--image ../shared/datasets/tuning/house.jpg] [--side 64]
        [--step-sides 64,128] [--threads 1] [--inpaint-steps 5000] [--denoise-steps 3000]
        [--sigma 25] [--fill-ratio 0.04] [--seed 0] [--log-every 500]

Step times use DIP's published networks (``knitwork.dip.dip_config``) on random images, the
median of a few steps after one warm-up. The fits degrade --image (downscaled to a longest side
of --side) with ``knitwork.degradation.Degradation``: a seeded square hole of --fill-ratio,
seeded Gaussian noise of --sigma (0–255). PSNR on RGB in [0, 1], whole image (and the hole for
inpainting), beside the free answer (mean-colour fill, the noisy input). Prints only; nothing is
written.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from core import load_reduced
from machine import describe

from knitwork.degradation import Degradation
from knitwork.dip import dip_config, fit_dip, memory_estimate
from knitwork.metrics import psnr
from knitwork.tasks import naive_restoration, observe

ROOT = Path(__file__).resolve().parent.parent


def step_seconds(task: str, side: int, repeats: int = 5) -> float:
    """Median seconds of one step of ``task``'s DIP network on a side×side RGB image (the
    first step, which pays for oneDNN's kernel selection, and the set-up are left out)."""
    image = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)
    stamps: list[float] = []
    config = dip_config(task, steps=repeats + 1)
    fit_dip(
        observe(task, image),
        config,
        progress=lambda *_: stamps.append(time.perf_counter()),
        log_every=1,
    )
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


def run_fit(task: str, clean: np.ndarray, args: argparse.Namespace) -> None:
    degradation = Degradation(task=task, fill_ratio=args.fill_ratio, sigma=args.sigma)
    obs, truth = degradation.apply(clean, seed=args.seed)
    steps = args.inpaint_steps if task == "inpaint" else args.denoise_steps
    config = dip_config(task, steps)
    free = naive_restoration(obs)
    hole = obs.hole if task == "inpaint" else None

    def report(step: int, metrics: dict[str, float]) -> None:
        print(f"  step {step:5d}  loss {metrics['total']:.5f}  psnr {metrics['psnr']:.2f} dB")
        sys.stdout.flush()

    print(f"{task}: {config.describe()}")
    result = fit_dip(
        obs, config, seed=args.seed, progress=report, ground_truth=truth, log_every=args.log_every
    )
    line = (
        f"  {task}: PSNR {psnr(result.image, truth):.2f} dB (free answer {psnr(free, truth):.2f})"
    )
    if hole is not None:
        line += f", hole {psnr(result.image, truth, hole):.2f} dB (mean fill "
        line += f"{psnr(free, truth, hole):.2f}), hole {int(hole.sum())} px"
    print(line)
    print(
        f"  {result.steps} steps in {result.seconds:.1f} s "
        f"({result.seconds / result.steps * 1000:.1f} ms/step), {result.parameters:,} parameters, "
        f"{result.backtracks} backtracks"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(ROOT.parent / "shared/datasets/tuning/house.jpg"))
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--step-sides", default="64,128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inpaint-steps", type=int, default=dip_config("inpaint").steps)
    parser.add_argument("--denoise-steps", type=int, default=dip_config("denoise").steps)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--fill-ratio", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=500)
    parser.add_argument("--tasks", default="inpaint,denoise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a script may; knitwork.dip never does
    print(describe())
    tasks = args.tasks.split(",")
    for side in (int(s) for s in args.step_sides.split(",") if s):
        for task in tasks:
            estimate = memory_estimate(side, side, dip_config(task)) / 2**20
            seconds = step_seconds(task, side)
            print(f"step {task} {side}×{side}: {seconds * 1000:.0f} ms ({estimate:.0f} MiB est.)")
    clean = load_reduced(Path(args.image), args.side)
    print(f"image {Path(args.image).name} at {clean.shape[1]}×{clean.shape[0]}, seed {args.seed}")
    for task in tasks:
        run_fit(task, clean, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
