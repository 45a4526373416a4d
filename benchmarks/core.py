"""CPU benchmark of the core: Knitwork vs the conventional MLP on reduced-size Set5.

    python benchmarks/core.py [--images ../shared/datasets/Set5] [--max-side 128]
                              [--out docs/benchmarks/core.md] [--steps-scale 1.0]

Every image is downscaled (Lanczos) to a longest side of --max-side, then degraded with the
seeded degradations of `knitwork fit --synthetic`: inpainting with one square hole of 2% and
4% of the image, denoising at σ 20 and 40. Each is restored by the fast-* preset and by the MLP
baseline on the same budget. Metrics follow docs/metrics.md. The training step's GFLOP/s
(FLOPs counted by torch.utils.flop_counter, time measured) is reported as a fraction of a plain
fp32 matmul's GFLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from machine import describe, publish
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from knitwork.config import Config, as_baseline
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.metrics import evaluate, psnr
from knitwork.presets import get_preset
from knitwork.tasks import naive_restoration
from knitwork.trainer import Trainer

SR_MARK = "<!-- super-resolution rows: written by benchmarks/sr.py -->"
SETTINGS = [("inpaint", 0.02), ("inpaint", 0.04), ("denoise", 20.0), ("denoise", 40.0)]


def load_reduced(path: Path, max_side: int) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = min(1.0, max_side / max(img.size))
        size = (round(img.width * scale), round(img.height * scale))
        return np.asarray(img.resize(size, Image.LANCZOS), dtype=np.float32) / 255.0


def matmul_gflops(repeats: int = 20, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a (16384×512)·(512×256) matmul in ``dtype``, the patch MLP's first layer."""
    a, b = torch.randn(16384, 512, dtype=dtype), torch.randn(512, 256, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 16384 * 512 * 256 * repeats / (time.perf_counter() - start) / 1e9


def step_cost(observation, config: Config, repeats: int = 5) -> tuple[float, float]:
    """(GFLOP per training step, seconds per step) at this image size."""
    trainer = Trainer(observation, config.with_steps(repeats + 2), seed=0)
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    trainer.step()
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.step()
    return counter.get_total_flops() / 1e9, (time.perf_counter() - start) / repeats


def run_one(clean, task, level, method, preset, steps_scale, seed):
    kwargs = {"fill_ratio": level} if task == "inpaint" else {"sigma": level}
    obs, _ = Degradation(task=task, **kwargs).apply(clean, seed)
    config = get_preset(preset)
    config = config.with_steps(max(1, round(config.optim.steps * steps_scale)))
    if method == "mlp":
        config = as_baseline(config)
    result = fit(obs, config, seed=seed)
    hole = obs.hole if task == "inpaint" else None
    row = evaluate(result.image, clean, hole)
    row["reference_psnr"] = psnr(naive_restoration(obs), clean, hole)
    row |= {"seconds": result.seconds, "steps": result.steps, "parameters": result.parameters}
    return row, obs, config


def _mean(rows, key):
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.fmean(values) if values else None


def _f(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="../shared/datasets/Set5")
    parser.add_argument("--max-side", type=int, default=128)
    parser.add_argument("--out", default="docs/benchmarks/core.md")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply preset steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = sorted(Path(args.images).glob("*.png"))
    if not paths:
        sys.exit(f"{args.images}: no PNG images found")
    images = {p.stem: load_reduced(p, args.max_side) for p in paths}
    peak = matmul_gflops()
    print(f"fp32 matmul: {peak:.0f} GFLOP/s", flush=True)
    rows, costs = [], {}
    for task, level in SETTINGS:
        preset = f"fast-{task}"
        for method in ("knitwork", "mlp"):
            for name, clean in images.items():
                row, obs, config = run_one(
                    clean, task, level, method, preset, args.steps_scale, args.seed
                )
                rows.append({"task": task, "level": level, "method": method, "image": name, **row})
                print(
                    f"{task} {level} {method:8s} {name:10s} psnr {row['psnr']:.2f} "
                    f"hole {_f(row['psnr_hole'])} {row['seconds']:.1f}s",
                    flush=True,
                )
                if (task, method) not in costs and name == "butterfly":
                    costs[(task, method)] = (*step_cost(obs, config), obs.image.shape)
    write_report(args, rows, costs, peak, sorted(images))


def write_report(args, rows, costs, peak, names) -> None:
    lines = [
        "# Core benchmark: Knitwork vs the conventional coordinate MLP (CPU, reduced size)",
        "",
        f"Command: `python benchmarks/core.py --images {args.images} --max-side {args.max_side}"
        f" --steps-scale {args.steps_scale}` (or `make bench`)  ",
        f"Machine: {describe()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.  ",
        f"Images: Set5 ({', '.join(names)}) **downscaled to a longest side of "
        f"{args.max_side} px** (Lanczos), so these numbers are not comparable with the paper's "
        "full-size tables; the full reproduction is docs/benchmarks/quality.md's job.  ",
        "Presets: `fast-inpaint` / `fast-denoise`; the MLP baseline is `--baseline mlp` on the "
        "same preset (same encoding, steps and learning rate). Seeded degradations (seed "
        f"{args.seed}); metrics as in [docs/metrics.md](../metrics.md): RGB, data range 1, no "
        "border crop. `reference` is the naive answer: the hole filled with the mean known "
        "colour, or the noisy input itself.",
        "",
        "## Quality (mean over images)",
        "",
        "| task | setting | method | PSNR | SSIM | hole PSNR | hole SSIM | reference PSNR |"
        " fit s | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, level in SETTINGS:
        setting = f"fill {level:.0%}" if task == "inpaint" else f"σ {level:g}"
        for method in ("knitwork", "mlp"):
            sel = [r for r in rows if (r["task"], r["level"], r["method"]) == (task, level, method)]
            per_step = statistics.fmean(r["seconds"] / r["steps"] for r in sel)
            ref_key = "reference_psnr"
            lines.append(
                f"| {task} | {setting} | {method} | {_f(_mean(sel, 'psnr'))} | "
                f"{_f(_mean(sel, 'ssim'), 3)} | {_f(_mean(sel, 'psnr_hole'))} | "
                f"{_f(_mean(sel, 'ssim_hole'), 3)} | {_f(_mean(sel, ref_key))} | "
                f"{_mean(sel, 'seconds'):.1f} | {per_step:.3f} |"
            )
    lines += [
        "",
        "## Training-step throughput (butterfly)",
        "",
        f"Plain fp32 matmul (16384×512 · 512×256) in the same run: **{peak:.0f} GFLOP/s**.",
        "",
        "| task | method | size | GFLOP / step | s / step | GFLOP/s | fraction of matmul |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, method), (gflop, seconds, shape) in costs.items():
        rate = gflop / seconds
        lines.append(
            f"| {task} | {method} | {shape[1]}×{shape[0]} | {gflop:.2f} | {seconds:.3f} | "
            f"{rate:.0f} | {rate / peak:.2f} |"
        )
    header = "| task | setting | method | image | PSNR | SSIM | hole PSNR | hole SSIM | fit s |"
    lines += ["", "## Per image", "", header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        setting = f"fill {r['level']:.0%}" if r["task"] == "inpaint" else f"σ {r['level']:g}"
        lines.append(
            f"| {r['task']} | {setting} | {r['method']} | {r['image']} | {_f(r['psnr'])} | "
            f"{_f(r['ssim'], 3)} | {_f(r['psnr_hole'])} | {_f(r['ssim_hole'], 3)} | "
            f"{r['seconds']:.1f} |"
        )
    out = Path(args.out)
    kept = ""  # the super-resolution rows benchmarks/sr.py appended stay
    if out.exists() and SR_MARK in (old := out.read_text(encoding="utf-8")):
        kept = "\n" + SR_MARK + old.split(SR_MARK, 1)[1]
    publish(out, lines, kept)


if __name__ == "__main__":
    main()
