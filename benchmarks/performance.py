"""Performance: memory against image size, a 12-megapixel photo, crop steps against full-grid
steps at the same wall time. Writes docs/benchmarks/performance.md (one section per part; a
part run again replaces its own section).

    python benchmarks/performance.py memory  [--sizes 64 128 256 512 1024 2048] [--budget 2G]
    python benchmarks/performance.py photo   [--source ../shared/datasets/tuning/house.jpg]
                                             [--budget 4G] [--steps 300]
    python benchmarks/performance.py crops   [--images ../shared/datasets/tuning] [--count 5]
                                             [--side 256] [--crop 128] [--steps 200]

Every fit runs in a fresh interpreter so that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from machine import describe, publish_section
from PIL import Image

from knitwork.config import parse_size
from knitwork.memory import plan_steps
from knitwork.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks" / "performance.md"
KNITWORK = [sys.executable, "-m", "knitwork_cli"]
PARAMETERS = 300_000  # fast-* generator + discriminator, for the estimate (order of magnitude)
FIT = """
import json, resource, sys, numpy as np, torch
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.presets import get_preset
torch.set_num_threads(2)
side, budget, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
clean = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)
obs, _ = Degradation(task="denoise").apply(clean, 0)
config = get_preset("fast-denoise").with_steps(steps).with_device("cpu")
optim = config.optim.__class__(**(config.optim.__dict__ | {"max_memory": budget}))
config = config.replace(optim=optim)
result = fit(obs, config, seed=0)
print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "crop": result.crop, "seconds": result.seconds}))
"""


def section(name: str, lines: list[str]) -> None:
    """Replace (or add) the section between this part's markers in the doc, and print it."""
    publish_section(DOC, name, lines, "Performance")


def header(command: str) -> list[str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [f"Command: `{command}`  ", f"Machine: {describe()}; run {stamp}.", ""]


def measure_fit(side: int, budget: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", FIT, str(side), budget, str(steps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout)


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of a 3-step fast-denoise fit against image size: with a budget big enough for
    the full grid (what every fit did before), and with --budget (crops beyond it)."""
    config = get_preset("fast-denoise")
    rows = [
        "| side | pixels | budget | steps | peak MiB | KiB / pixel | estimate MiB |",
        "|" + "---|" * 7,
    ]
    for side in args.sizes:
        for budget in ("64G", args.budget):
            plan = plan_steps(
                config,
                channels=3,
                grid=(side, side),
                input_pixels=side * side,
                parameters=PARAMETERS,
                budget=parse_size(budget),
            )
            if budget == "64G" and plan.peak > parse_size(args.full_limit):
                rows.append(
                    f"| {side} | {side * side:,} | full grid | — | not run: estimate "
                    f"{plan.peak / 2**20:,.0f} MiB | | |"
                )
                continue
            got = measure_fit(side, budget, 3)
            mode = "full grid" if got["crop"] is None else f"{got['crop'][0]}² crops"
            rows.append(
                f"| {side} | {side * side:,} | {budget if budget != '64G' else 'none'} | {mode} "
                f"| {got['peak'] / 2**20:,.0f} | {got['peak'] / 1024 / side**2:.2f} "
                f"| {plan.peak / 2**20:,.0f} |"
            )
            print(rows[-1], flush=True)
    command = "python benchmarks/performance.py memory " + shlex.join(
        ["--sizes", *map(str, args.sizes), "--budget", args.budget]
    )
    section("memory", ["## Memory against image size", "", *header(command), *rows, ""])


def photo(args: argparse.Namespace) -> None:
    """A 12-megapixel photo (a tuning image enlarged) denoised and inpainted under --budget."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Image.open(args.source) as img:
            big = np.asarray(img.convert("RGB").resize((4000, 3000), Image.LANCZOS))
        rng = np.random.default_rng(0)
        noisy = np.clip(big + rng.normal(0, 25, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / "noisy.png")
        Image.fromarray(big).save(folder / "photo.png")
        mask = np.zeros(big.shape[:2], np.uint8)
        for top, left in rng.integers(0, [2800, 3800], size=(12, 2)):
            mask[top : top + 120, left : left + 160] = 255  # twelve 160×120 holes
        Image.fromarray(mask).save(folder / "mask.png")
        rows = [
            "| task | input | steps | budget | crops | seconds | peak RSS MiB |",
            "|" + "---|" * 7,
        ]
        for task, image, extra in (
            ("denoise", "noisy.png", []),
            ("inpaint", "photo.png", ["--mask", str(folder / "mask.png")]),
        ):
            out = folder / f"{task}.png"
            cmd = [
                *KNITWORK,
                "fit",
                str(folder / image),
                "--task",
                task,
                "--steps",
                str(args.steps),
                "--max-memory",
                args.budget,
                "--quiet",
                "-o",
                str(out),
                *extra,
                "--metrics-json",
                str(folder / f"{task}.json"),
            ]
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True)
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            metrics = json.loads((folder / f"{task}.json").read_text())
            rows.append(
                f"| {task} | 4000×3000 | {args.steps} | {args.budget} | {metrics['crop']} "
                f"| {seconds:.0f} | {peak / 2**20:,.0f} |"
            )
            print(rows[-1], flush=True)
    command = (
        f"python benchmarks/performance.py photo --source {args.source} "
        f"--budget {args.budget} --steps {args.steps}"
    )
    note = (
        "The photo is the tuning image enlarged (Lanczos) to 4000×3000 = 12 MP; denoising "
        "restores it with seeded Gaussian noise σ 25 added, inpainting fills twelve 160×120 "
        "holes given as a mask. Peak RSS is the largest of the fit processes (ru_maxrss of "
        "the children, so the inpainting row is the larger of the two). Wall time includes "
        "reading, the fit, drawing 12 M pixels and writing the PNG."
    )
    section("photo", ["## A 12-megapixel photo", "", *header(command), note, "", *rows, ""])


def crop_fit(path: Path, side: int, crop: int, steps: int, seed: int) -> dict:
    script = f"""
import json, sys, numpy as np, torch, dataclasses
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from core import load_reduced
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.metrics import psnr
from knitwork.presets import get_preset
torch.set_num_threads(2)
clean = load_reduced(__import__('pathlib').Path({str(path)!r}), {side})
obs, truth = Degradation(task="denoise", sigma=25).apply(clean, {seed})
config = get_preset("fast-denoise").with_steps({steps}).with_device("cpu")
config = config.replace(optim=dataclasses.replace(config.optim, crop_size={crop}))
result = fit(obs, config, seed={seed})
print(json.dumps({{"psnr": psnr(result.image, truth), "seconds": result.seconds}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(out.stdout)


def crops(args: argparse.Namespace) -> None:
    """Crop steps against full-grid steps at the same wall time (denoising σ 25)."""
    paths = sorted(Path(args.images).glob("*.jpg"))[: args.count]
    rows = ["| image | full PSNR | full s | crop steps | crop PSNR | crop s |", "|" + "---|" * 6]
    diffs = []
    for i, path in enumerate(paths):
        full = crop_fit(path, args.side, 0, args.steps, i)
        probe = crop_fit(path, args.side, args.crop, 20, i)
        steps = max(1, round(20 * full["seconds"] / probe["seconds"]))
        cropped = crop_fit(path, args.side, args.crop, steps, i)
        diffs.append(cropped["psnr"] - full["psnr"])
        rows.append(
            f"| {path.stem} | {full['psnr']:.2f} | {full['seconds']:.0f} | {steps} "
            f"| {cropped['psnr']:.2f} | {cropped['seconds']:.0f} |"
        )
        print(rows[-1], flush=True)
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    wins = sum(d > 0 for d in diffs)
    verdict = "within" if abs(mean) <= se else ("above" if mean > 0 else "below")
    summary = (
        f"Crop − full: **{mean:+.2f} dB ± {se:.2f}** (paired SE over {len(diffs)} images; crops "
        f"ahead on {wins} of {len(diffs)}): {verdict} the paired standard error."
    )
    command = (
        f"python benchmarks/performance.py crops --images {args.images} "
        f"--count {args.count} --side {args.side} --crop {args.crop} --steps {args.steps}"
    )
    note = (
        f"Reduced protocol: the first {args.count} tuning images, downscaled to a longest side "
        f"of {args.side} px, seeded noise σ 25, `fast-denoise`. Full grid: {args.steps} steps. "
        f"Crops: {args.crop}×{args.crop} windows, as many steps as fit the full-grid fit's "
        "wall time (step time measured on 20 steps)."
    )
    section(
        "crops",
        [
            "## Crop steps against full-grid steps",
            "",
            *header(command),
            note,
            "",
            *rows,
            "",
            summary,
            "",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    m.add_argument("--budget", default="2G")
    m.add_argument("--full-limit", default="12G", help="skip full-grid fits estimated above this")
    m.set_defaults(go=memory)
    p = sub.add_parser("photo")
    p.add_argument("--source", default="../shared/datasets/tuning/house.jpg")
    p.add_argument("--budget", default="4G")
    p.add_argument("--steps", type=int, default=300)
    p.set_defaults(go=photo)
    c = sub.add_parser("crops")
    c.add_argument("--images", default="../shared/datasets/tuning")
    c.add_argument("--count", type=int, default=5)
    c.add_argument("--side", type=int, default=256)
    c.add_argument("--crop", type=int, default=128)
    c.add_argument("--steps", type=int, default=200)
    c.set_defaults(go=crops)
    args = parser.parse_args()
    args.go(args)


if __name__ == "__main__":
    main()
