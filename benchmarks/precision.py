"""Does bf16 autocast keep restoration quality? fp32 vs bf16 on the same fits.

    python benchmarks/precision.py [--images ../shared/datasets/tuning] [--count 5]
                                   [--max-side 96] [--out docs/benchmarks/precision.md]

The first --count images (sorted) of the tuning set (where defaults are chosen), reduced to
--max-side, inpainting 4% (`fast-inpaint`) and denoising σ 20 (`fast-denoise`), each fitted
with `optim.precision` fp32 and bf16 (the patch MLP under torch.autocast; losses in fp32).
The quality change is the paired difference over images with its standard error: the score is
the hole PSNR for inpainting, the PSNR for denoising.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from datetime import UTC, datetime
from pathlib import Path

from core import _f, load_reduced
from machine import describe, publish

from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.metrics import evaluate
from knitwork.presets import get_preset

SETTINGS = [("inpaint", {"fill_ratio": 0.04}), ("denoise", {"sigma": 20.0})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="../shared/datasets/tuning")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--max-side", type=int, default=96)
    parser.add_argument("--out", default="docs/benchmarks/precision.md")
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix in (".png", ".jpg"))
    paths = paths[: args.count]
    rows = []
    for task, degradation in SETTINGS:
        base = get_preset(f"fast-{task}")
        for path in paths:
            clean = load_reduced(path, args.max_side)
            obs, _ = Degradation(task=task, **degradation).apply(clean, 0)
            hole = obs.hole if task == "inpaint" else None
            for precision in ("fp32", "bf16"):
                optim = dataclasses.replace(base.optim, precision=precision)
                result = fit(obs, base.replace(optim=optim), seed=0)
                m = evaluate(result.image, clean, hole)
                rows.append(
                    {
                        "task": task,
                        "precision": precision,
                        "image": path.stem,
                        "seconds": result.seconds,
                        **m,
                    }
                )
                print(task, precision, path.stem, f"{m['psnr']:.2f}", f"{result.seconds:.1f}s")
    lines = [
        "# bf16 autocast vs fp32 (CPU)",
        "",
        f"Command: `python benchmarks/precision.py --images {args.images} --count {args.count} "
        f"--max-side {args.max_side}`  ",
        f"Machine: {describe()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.  ",
        f"Images: {', '.join(p.stem for p in paths)} from {Path(args.images).name}, **reduced "
        f"to {args.max_side} px**;"
        " inpainting 4% with `fast-inpaint`, denoising σ 20 with `fast-denoise`, seed 0. Mean "
        "over images; metrics as in [docs/metrics.md](../metrics.md).",
        "",
        "| task | precision | PSNR | SSIM | hole PSNR | fit s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, _ in SETTINGS:
        fp32 = None
        for precision in ("fp32", "bf16"):
            sel = [r for r in rows if (r["task"], r["precision"]) == (task, precision)]
            seconds = statistics.fmean(r["seconds"] for r in sel)
            fp32 = fp32 or seconds
            hole = [r["psnr_hole"] for r in sel if r["psnr_hole"] is not None]
            lines.append(
                f"| {task} | {precision} | {_f(statistics.fmean(r['psnr'] for r in sel))} | "
                f"{_f(statistics.fmean(r['ssim'] for r in sel), 3)} | "
                f"{_f(statistics.fmean(hole) if hole else None)} | {seconds:.1f} | "
                f"×{fp32 / seconds:.2f} |"
            )
    lines += ["", "| task | score | bf16 − fp32 (paired SE) | verdict |", "|---|---|---|---|"]
    for task, _ in SETTINGS:
        key = "psnr_hole" if task == "inpaint" else "psnr"
        by = {
            p: {r["image"]: r[key] for r in rows if (r["task"], r["precision"]) == (task, p)}
            for p in ("fp32", "bf16")
        }
        diffs = [by["bf16"][name] - by["fp32"][name] for name in by["fp32"]]
        mean = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        verdict = "within the SE" if abs(mean) <= se else ("better" if mean > 0 else "worse")
        lines.append(f"| {task} | {key} | {mean:+.3f} ± {se:.3f} dB | {verdict} |")
    publish(args.out, lines)


if __name__ == "__main__":
    main()
