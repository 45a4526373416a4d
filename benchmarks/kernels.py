"""Blind super-resolution's kernel: the spectral estimate (``model.blind_kernel = "estimate"``)
against the kernel learned with the image and the true kernel, on a reduced protocol.

    python benchmarks/kernels.py estimate [--images ../shared/datasets/tuning] [--side 256]
    python benchmarks/kernels.py fits [--images ../shared/datasets/tuning] [--names a.jpg,b.jpg]
        [--side 128] [--steps 300] [--modes estimate,learn,known]
        [--kinds round,diagonal,random] [--scales 2,4] [--seed 0]
    python benchmarks/kernels.py picture --names house.jpg --kinds round [--side 128]

Images: each one's centre square, resized (PIL bicubic) to --side × --side: the HR truth. It
is downsampled by ×2 and ×4 with each kernel kind: delta, round Gaussian σ = r/2, diagonal
Gaussian σx 0.75·r, σy 0.3·r at 45°, and random (``kernels.random_kernel`` drawn from the
CRC32 of the image's name). ``estimate`` only estimates kernels (seconds); ``fits`` runs
the earlier `fast-sr` (α 3, Fourier scale 5 across the image; ``earlier_fast_sr``) blind with
each --modes (estimate: the spectral estimate as a known kernel; learn: the deep linear kernel
learned with the image; known: the true kernel given; a "+guide" suffix adds loss.sr_guide 1
fading over 100 steps, "+scaleS" the Fourier scale S, "+alphaA" the consistency weight A) and
bicubic, one torch thread per fit, caching each row in out/kernels/rows.jsonl so a rerun (or
another lane on other --names) only computes what is new. Both publish their table in
docs/benchmarks/sr-kernels.md: kernel error (``kernels.kernel_error``) beside the delta
start's, PSNR differences with their paired standard error over images, win counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from machine import describe, publish_section
from PIL import Image

from knitwork.config import Config, EncodingConfig
from knitwork.fit import fit
from knitwork.kernel_estimation import estimate_kernel
from knitwork.kernels import (
    bicubic_upsample,
    degrade_sr,
    delta_kernel,
    kernel_error,
    parse_kernel,
    random_kernel,
)
from knitwork.metrics import psnr
from knitwork.presets import get_preset
from knitwork.report import learned_kernel
from knitwork.tasks import observe
from pipeline.bench_suites import sr_kernel

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks" / "sr-kernels.md"
ROWS = ROOT / "out" / "kernels" / "rows.jsonl"
TITLE = "Blind SR kernels: estimated, learned, true (reduced protocol, tuning set)"
SCALES = (2, 4)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def load_square(path: Path, side: int) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        s = min(img.size)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((side, side), Image.BICUBIC)
    return np.asarray(img, np.float32) / 255


def true_kernel(kind: str, scale: int, name: str) -> np.ndarray:
    """The bench's kernels (`pipeline.bench_suites.sr_kernel`); random ones drawn from the name."""
    if kind == "random":
        return random_kernel(zlib.crc32(name.encode()), scale)
    return parse_kernel(sr_kernel(kind, scale))


def images(folder: Path, names: str | None) -> list[Path]:
    chosen = names.split(",") if names else None
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    return [p for p in found if chosen is None or p.name in chosen]


def paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    wins = sum(x > 0 for x in d)
    spread = f" ± {se:.2f}" if len(d) > 1 else ""  # one image: no standard error
    return f"{statistics.fmean(d):+.2f}{spread} ({wins}/{len(d)})"


def run_estimate(args: argparse.Namespace) -> None:
    paths = images(Path(args.images), args.names)
    lines = [
        f"Command: `python benchmarks/kernels.py estimate --images {args.images} --side "
        f"{args.side}`  ",
        f"Machine: {describe()}.  ",
        f"Images: {len(paths)} ({', '.join(p.name for p in paths)}), centre squares at "
        f"{args.side} px (HR). Kernel error: ||k − t||² / ||t||² at the best whole-pixel shift "
        "(0 = the truth); the delta start is what plain subsampling (the learned kernel's "
        "start) scores. Wins: images where the estimate scores below half the delta start's error.",
        "",
        "| setting | estimate: mean | median | worst | delta start: mean | wins | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale in SCALES:
        for kind in ("delta", "round", "diagonal", "random"):
            errors, starts, seconds = [], [], []
            for path in paths:
                truth = true_kernel(kind, scale, path.name)
                _, low = degrade_sr(load_square(path, args.side), scale, truth)
                start = time.perf_counter()
                estimate = estimate_kernel(low, scale)
                seconds.append(time.perf_counter() - start)
                errors.append(kernel_error(estimate, truth))
                starts.append(kernel_error(delta_kernel(), truth))
            wins = sum(e < s / 2 for e, s in zip(errors, starts, strict=True))
            wins = "–" if kind == "delta" else f"{wins}/{len(paths)}"  # the start is the truth
            lines.append(
                f"| x{scale}/{kind} | {statistics.fmean(errors):.3f} | "
                f"{statistics.median(errors):.3f} | {max(errors):.3f} | "
                f"{statistics.fmean(starts):.3f} | {wins} | "
                f"{statistics.fmean(seconds):.3f} |"
            )
    publish_section(DOC, f"estimate-{args.side}", lines, TITLE)


def earlier_fast_sr() -> Config:
    """The base of every mode: fast-sr as it was before 2026-12-01 (α 3, Fourier scale 5
    across the image). "estimate+alpha0.3+scale10" on it is today's fast-sr at 128 px."""
    config = get_preset("fast-sr")
    model = dataclasses.replace(config.model, encoding=EncodingConfig(scale=5.0))
    return config.replace(model=model, loss=dataclasses.replace(config.loss, alpha=3.0))


def fit_row(path: Path, scale: int, kind: str, mode: str, args: argparse.Namespace) -> dict:
    truth = true_kernel(kind, scale, path.name)
    hr, low = degrade_sr(load_square(path, args.side), scale, truth)
    base = earlier_fast_sr().with_steps(args.steps).with_device("cpu")
    if mode == "bicubic":
        return {"psnr": psnr(bicubic_upsample(low, scale), hr), "seconds": 0.0}
    kernel_mode, *extras = mode.split("+")  # "+guide": loss.sr_guide 1 over 100 steps
    if "guide" in extras:
        base = base.replace(loss=dataclasses.replace(base.loss, sr_guide=1.0, sr_guide_steps=100))
    for extra in (e for e in extras if e.startswith("scale")):  # "+scale10": Fourier scale 10
        encoding = dataclasses.replace(base.model.encoding, scale=float(extra[len("scale") :]))
        base = base.replace(model=dataclasses.replace(base.model, encoding=encoding))
    for extra in (e for e in extras if e.startswith("alpha")):  # "+alpha0.3": α 0.3
        base = base.replace(loss=dataclasses.replace(base.loss, alpha=float(extra[len("alpha") :])))
    if kernel_mode == "known":
        obs, config = observe("sr", low, scale=scale, kernel=truth), base
    else:
        obs = observe("sr", low, scale=scale)
        config = base.replace(model=dataclasses.replace(base.model, blind_kernel=kernel_mode))
    start = time.perf_counter()
    result = fit(obs, config, seed=args.seed)
    row = {"psnr": psnr(result.image, hr), "seconds": time.perf_counter() - start}
    kernel = learned_kernel(result)
    if kernel is not None:
        row["kernel_error"] = kernel_error(kernel, truth)
    return row


def run_fits(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    cache = {}
    if ROWS.exists():
        for line in ROWS.read_text().splitlines():
            row = json.loads(line)
            cache[row["key"]] = row
    modes = ["bicubic", *args.modes.split(",")]
    paths = images(Path(args.images), args.names)
    for scale in (int(v) for v in args.scales.split(",")):
        for kind in args.kinds.split(","):
            for path in paths:
                for mode in modes:
                    key = f"{path.name}|{args.side}|{args.steps}|x{scale}/{kind}|{mode}"
                    key += f"|seed={args.seed}" if args.seed else ""
                    if key in cache:
                        continue
                    row = {"key": key, **fit_row(path, scale, kind, mode, args)}
                    cache[key] = row
                    with ROWS.open("a") as out:
                        out.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    publish_fits(args, cache, modes)


def publish_fits(args: argparse.Namespace, cache: dict, modes: list[str]) -> None:
    """The table over every image the cache holds for these settings and modes."""
    lines = [
        f"Command: `python benchmarks/kernels.py fits --images {args.images} --side {args.side} "
        f"--steps {args.steps} --modes {args.modes} --kinds {args.kinds}"
        + (f" --seed {args.seed}" if args.seed else "")
        + "` (run in lanes by "
        "--names and --scales; the table covers every image with all modes cached).  ",
        f"Machine: {describe()}, one torch thread per fit, two fits at a time.  ",
        f"Protocol: the earlier `fast-sr` (α 3, Fourier scale 5 across the image) with "
        f"{args.steps} steps, each mode's suffix changing it; HR {args.side} px centre squares, "
        f"seed {args.seed}. PSNR differences: mean ± paired standard error over images (wins).",
        "",
        "| setting | images | bicubic | "
        + " | ".join(m for m in modes[1:])
        + " | "
        + " | ".join(f"{m} − bicubic" for m in modes[1:])
        + "".join(f" | {modes[1]} − {m}" for m in modes[2:])
        + " | kernel error ("
        + ", ".join(m for m in modes[1:] if not m.startswith("known"))
        + ") |",
        "|" + "---|" * (3 + 2 * (len(modes) - 1) + len(modes) - 2 + 1),
    ]
    for scale in SCALES:
        for kind in args.kinds.split(","):
            setting = f"x{scale}/{kind}"
            table: dict[str, dict[str, dict]] = {}
            for row in cache.values():
                name, side, steps, s, mode, *seed = row["key"].split("|")
                seeded = seed == ([f"seed={args.seed}"] if args.seed else [])
                if (side, steps, s) == (str(args.side), str(args.steps), setting) and seeded:
                    table.setdefault(name, {})[mode] = row
            full = [n for n in sorted(table) if all(m in table[n] for m in modes)]
            if not full:
                continue
            score = {m: [table[n][m]["psnr"] for n in full] for m in modes}
            cells = [setting, str(len(full)), f"{statistics.fmean(score['bicubic']):.2f}"]
            cells += [f"{statistics.fmean(score[m]):.2f}" for m in modes[1:]]
            cells += [paired(score[m], score["bicubic"]) for m in modes[1:]]
            cells += [paired(score[modes[1]], score[m]) for m in modes[2:]]
            errs = [
                statistics.fmean(table[n][m]["kernel_error"] for n in full)
                for m in modes[1:]
                if not m.startswith("known")
            ]
            start = statistics.fmean(
                kernel_error(delta_kernel(), true_kernel(kind, scale, n)) for n in full
            )
            cells.append(", ".join(f"{e:.3f}" for e in errs) + f" (delta start {start:.2f})")
            lines.append("| " + " | ".join(cells) + " |")
    name = f"fits-{args.side}-{args.steps}-{args.modes}-{args.kinds}"
    publish_section(DOC, name + (f"-seed{args.seed}" if args.seed else ""), lines, TITLE)


def run_picture(args: argparse.Namespace) -> None:
    """The first --names photo at ×4 with the first --kinds kernel: the earlier fast-sr
    (learned kernel), today's fast-sr (estimated kernel), bicubic and the truth, whole and a
    zoomed crop of its centre, with the kernels (truth, learned, estimated) below."""
    torch.set_num_threads(2)
    path = images(Path(args.images), args.names)[0]
    kind, scale = args.kinds.split(",")[0], 4
    truth = true_kernel(kind, scale, path.name)
    hr, low = degrade_sr(load_square(path, args.side), scale, truth)
    before = fit(observe("sr", low, scale=scale), earlier_fast_sr().with_steps(args.steps), seed=0)
    after = fit(
        observe("sr", low, scale=scale), get_preset("fast-sr").with_steps(args.steps), seed=0
    )
    panels = [before.image, after.image, bicubic_upsample(low, scale), hr]
    c, q = args.side // 2, args.side // 8
    crops = [np.kron(p[c - q : c + q, c - q : c + q], np.ones((4, 4, 1))) for p in panels]
    kernels = [truth, learned_kernel(before), learned_kernel(after)]
    side = args.side
    row = np.concatenate(
        [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=1) for p in panels], 1
    )
    zoom = np.concatenate(
        [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=1) for p in crops], 1
    )
    strip = np.ones((side // 2, row.shape[1], 3), np.float32)
    for i, k in enumerate(kernels):
        picture = np.kron(k / k.max(), np.ones((4, 4)))[: side // 2, : side // 2]
        strip[: picture.shape[0], i * (side + 4) : i * (side + 4) + picture.shape[1]] = picture[
            ..., None
        ]
    whole = np.concatenate([row, np.ones((4, row.shape[1], 3)), zoom, strip], 0)
    out = ROOT / "docs" / "images" / f"sr-x4-{kind}-before-after.png"
    Image.fromarray((np.clip(whole, 0, 1) * 255).astype(np.uint8)).save(out)
    scores = [psnr(p, hr) for p in panels[:3]]
    print(f"{out}: earlier {scores[0]:.2f}, today {scores[1]:.2f}, bicubic {scores[2]:.2f} dB")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["estimate", "fits", "picture"])
    p.add_argument("--images", default=str(ROOT.parent / "shared" / "datasets" / "tuning"))
    p.add_argument("--names", help="only these files of --images (comma-separated)")
    p.add_argument("--side", type=int)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--modes", default="estimate,learn,known")
    p.add_argument("--kinds", default="round,diagonal,random")
    p.add_argument("--scales", default="2,4", help="fits: the factors to run (lanes)")
    p.add_argument("--seed", type=int, default=0, help="fits: the fits' seed [0]")
    args = p.parse_args(argv)
    if args.side is None:
        args.side = 256 if args.what == "estimate" else 128
    {"estimate": run_estimate, "fits": run_fits, "picture": run_picture}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
