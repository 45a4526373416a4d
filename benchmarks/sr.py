"""CPU benchmark of blind super-resolution: Knitwork vs the MLP baseline vs bicubic.

    python benchmarks/sr.py [--images ../shared/datasets/Set5] [--max-side 64] [--steps 300]
                            [--out docs/benchmarks/core-sr.md]

Each Set5 image is downscaled (Lanczos) to a longest side of --max-side; that is the HR ground
truth, cropped to a multiple of the factor and degraded as in docs/metrics.md with three
kernels per factor: delta (plain subsampling), round Gaussian σ = r/2, diagonal Gaussian
σx = 0.75·r, σy = 0.3·r at 45°. The Knitwork (`fast-sr`) learns the kernel (blind, as in the
paper's Table 2), and runs again with the true kernel given; the MLP baseline is fitted on the
LR grid and queried on the HR grid; bicubic is the free reference. A picture puts each learned
kernel beside the true one.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from core import SR_MARK, _f, load_reduced
from machine import describe, publish

from knitwork.config import as_baseline
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.io import save_image
from knitwork.kernels import delta_kernel, gaussian_kernel
from knitwork.metrics import evaluate
from knitwork.presets import get_preset
from knitwork.report import kernel_picture, learned_kernel, side_by_side
from knitwork.tasks import crop_to_scale, naive_restoration
from pipeline.bench_suites import sr_kernel


def kernels(scale: int) -> dict[str, np.ndarray]:
    return {
        "delta": delta_kernel(),
        "round": gaussian_kernel(scale / 2),
        "diagonal": gaussian_kernel(0.75 * scale, 0.3 * scale, np.pi / 4),
    }


def centred(kernel: np.ndarray, size: int) -> np.ndarray:
    """``kernel`` zero-padded or cropped to size×size around its centre."""
    out = np.zeros((size, size), np.float32)
    k, c = kernel.shape[0], size // 2
    r = min(k // 2, c)
    kc = k // 2
    out[c - r : c + r + 1, c - r : c + r + 1] = kernel[kc - r : kc + r + 1, kc - r : kc + r + 1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="../shared/datasets/Set5")
    parser.add_argument("--max-side", type=int, default=64)
    parser.add_argument("--out", default="docs/benchmarks/core-sr.md")
    parser.add_argument("--picture", default="docs/images/sr-kernels.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="steps of every fit")
    args = parser.parse_args()
    paths = sorted(Path(args.images).glob("*.png"))
    if not paths:
        sys.exit(f"{args.images}: no PNG images found")
    images = {p.stem: load_reduced(p, args.max_side) for p in paths}
    config = get_preset("fast-sr").with_steps(args.steps)
    rows, pictures = [], []
    for scale in (2, 4):
        for kname, kernel in kernels(scale).items():
            for name, clean in images.items():
                spec = sr_kernel(kname, scale)
                obs, _ = Degradation(task="sr", scale=scale, degrade_kernel=spec).apply(
                    clean, args.seed
                )
                truth = crop_to_scale(clean, scale)
                knit = fit(obs, config, seed=args.seed)
                known = fit(dataclasses.replace(obs, kernel=kernel), config, seed=args.seed)
                mlp = fit(obs, as_baseline(config), seed=args.seed)
                for method, image, seconds in (
                    ("knitwork", knit.image, knit.seconds),
                    ("knitwork-known", known.image, known.seconds),
                    ("mlp", mlp.image, mlp.seconds),
                    ("bicubic", naive_restoration(obs), 0.0),
                ):
                    m = evaluate(image, truth)
                    rows.append(
                        {
                            "scale": scale,
                            "kernel": kname,
                            "method": method,
                            "image": name,
                            "seconds": seconds,
                            **m,
                        }
                    )
                print(
                    f"x{scale} {kname:8s} {name:10s} "
                    + " ".join(f"{r['method']} {r['psnr']:.2f}" for r in rows[-4:]),
                    flush=True,
                )
                if name == "butterfly":
                    learned = learned_kernel(knit)
                    true = centred(kernel, learned.shape[0])
                    pictures.append(side_by_side(kernel_picture(true), kernel_picture(learned)))
    write_report(args, rows, sorted(images))
    save_image(
        args.picture,
        np.concatenate(
            [np.concatenate([p, np.ones((8, p.shape[1], 3), np.float32)]) for p in pictures]
        ),
    )


def write_report(args, rows, names) -> None:
    lines = [
        "# Core benchmark: blind super-resolution (CPU, reduced size)",
        "",
        f"Command: `python benchmarks/sr.py --images {args.images} --max-side {args.max_side} "
        f"--steps {args.steps}`  ",
        f"Machine: {describe()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.  ",
        f"Images: Set5 ({', '.join(names)}) **downscaled to a longest side of {args.max_side} px**"
        " (the HR ground truth), cropped to a multiple of the factor and degraded as in "
        "[docs/metrics.md](../metrics.md): delta, round Gaussian σ = r/2, diagonal Gaussian "
        "σx = 0.75·r, σy = 0.3·r at 45°. `knitwork`: `fast-sr` with "
        f"{args.steps} steps, blind (learned kernel, as in the paper's Table 2); "
        "`knitwork-known`: the same with the true kernel given. `mlp`: the same budget, fitted "
        "on the LR grid and queried on the HR grid. Metrics: RGB PSNR/SSIM, data range 1, no "
        "border crop.",
        "",
        "![true (left) and learned (right) kernels for butterfly: ×2 delta, round, diagonal, "
        "then ×4](../images/sr-kernels.png)",
        "",
        "| factor | kernel | method | PSNR | SSIM | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for scale in (2, 4):
        for kname in ("delta", "round", "diagonal"):
            for method in ("knitwork", "knitwork-known", "mlp", "bicubic"):
                sel = [
                    r
                    for r in rows
                    if (r["scale"], r["kernel"], r["method"]) == (scale, kname, method)
                ]
                lines.append(
                    f"| ×{scale} | {kname} | {method} | "
                    f"{_f(statistics.fmean(r['psnr'] for r in sel))} | "
                    f"{_f(statistics.fmean(r['ssim'] for r in sel), 3)} | "
                    f"{statistics.fmean(r['seconds'] for r in sel):.1f} |"
                )
    publish(args.out, lines)
    attach_to_core(Path(args.out), lines)


def attach_to_core(source: Path, lines: list[str]) -> None:
    """Repeat the SR table at the end of core.md (below SR_MARK), replacing an older copy."""
    core = source.with_name("core.md")
    if not core.exists():
        return
    text = core.read_text(encoding="utf-8").split(SR_MARK)[0].rstrip()
    table = [line for line in lines if line.startswith("|")]
    section = [
        SR_MARK,
        "## Super-resolution (blind), from benchmarks/sr.py",
        "",
        f"Reduced-size Set5; protocol, command and machine in [{source.name}]"
        f"({source.name}), with the learned kernels beside the true ones.",
        "",
        *table,
    ]
    core.write_text(text + "\n\n" + "\n".join(section) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
