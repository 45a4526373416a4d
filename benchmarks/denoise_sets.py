"""Denoising on the test sets (issue 12): CBSD68 at σ 15 / 25 / 50, Set5 / Set14 at σ 10 / 20 /
40 (beside the paper's Table 3), every method on the same noisy images, with paired SEs.

    python benchmarks/denoise_sets.py run [--sets CBSD68 Set5 Set14] [--crop 128] [--every-cbsd 4]
                                          [--preset fast-denoise]
    python benchmarks/denoise_sets.py report

`run` calls `knitwork bench quality --suite denoise` once per set (local Ray cluster, MLflow in
out/bench/mlflow.db, rows in docs/benchmarks/denoise/SET.json, restored images in
out/denoise-sets/SET/; a rerun resumes). `report` writes the "sets" section of
docs/benchmarks/denoise.md and docs/images/denoise-SET.png from those rows. Nothing here was
used to choose a parameter: the presets are tuned on ../shared/datasets/tuning/ only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from machine import describe, publish_section
from quality_paper import PAPER_DENOISE
from quality_pictures import contact_sheet, panel

from knitwork.io import load_image, save_image
from pipeline.bench_tables import paired

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "benchmarks" / "denoise"
OUT = ROOT / "out" / "denoise-sets"
DOC = ROOT / "docs" / "benchmarks" / "denoise.md"
SIGMAS = {"CBSD68": (15, 25, 50), "Set5": (10, 20, 40), "Set14": (10, 20, 40)}
# Published CBM3D on full-size CBSD68 (noise not clipped): ../shared/datasets/README.md.
CBM3D_CBSD68 = {15: 33.52, 25: 30.71, 50: 27.38}
ORDER = ("knitwork", "mlp", "nlm", "bm3d", "bm3d-sigma")
PICTURE = {"CBSD68": 25, "Set5": 20, "Set14": 20}  # σ of each set's picture


def command(dataset: str, crop: int, every: int, preset: str) -> list[str]:
    sigmas = ",".join(str(s) for s in SIGMAS[dataset])
    cmd = [
        "knitwork", "bench", "quality", "--suite", "denoise",
        "--images", f"../shared/datasets/{dataset}", "--sigmas", sigmas,
        "--centre-crop", str(crop), "--preset", preset,
        "--experiment", f"denoise-{dataset}", "--output", f"out/denoise-sets/{dataset}",
        "--json", f"docs/benchmarks/denoise/{dataset.lower()}.json", "--quiet",
    ]  # fmt: skip
    if every > 1:
        cmd += ["--every", str(every)]
    return cmd


def _every(dataset: str, args: argparse.Namespace) -> int:
    return args.every_cbsd if dataset == "CBSD68" else 1


def run(args: argparse.Namespace) -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / 'out' / 'bench' / 'mlflow.db'}"}
    (ROOT / "out" / "bench").mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    worst = 0
    for dataset in args.sets:
        cmd = command(dataset, args.crop, _every(dataset, args), args.preset)
        print("$", shlex.join(cmd), flush=True)
        done = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=ROOT, env=env)
        worst = max(worst, done.returncode)
    return worst


def _scores(rows: list[dict], key: str = "psnr") -> dict[tuple[int, str], dict[str, float]]:
    """(σ, method) → image → score, over the rows that succeeded."""
    found: dict[tuple[int, str], dict[str, float]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get(key) is not None:
            sigma = int(r["setting"].split("=")[1])
            found.setdefault((sigma, r["method"]), {})[r["image"]] = r[key]
    return found


def _seconds(rows: list[dict], sigma: int, method: str) -> float | None:
    times = [
        r["seconds"]
        for r in rows
        if r["status"] == "ok" and r["setting"] == f"sigma={sigma}" and r["method"] == method
    ]
    return statistics.fmean(times) if times else None


def verdict(mean: float, se: float | None) -> str:
    """A difference is a win (or a loss) only when it lies outside its paired SE."""
    if se is None or abs(mean) <= se:
        return "within SE"
    return "ahead" if mean > 0 else "behind"


def set_table(dataset: str, rows: list[dict]) -> list[str]:
    sigmas = SIGMAS[dataset]
    psnr, ssim = _scores(rows), _scores(rows, "ssim")
    images = sorted({r["image"] for r in rows})
    failed = sum(r["status"] != "ok" for r in rows)
    head = "| method | " + " | ".join(f"σ {s}: PSNR / SSIM" for s in sigmas) + " | s / image |"
    lines = [
        f"### {dataset} ({len(images)} images"
        + (f", {failed} failed rows" if failed else "")
        + ")",
        "",
        head,
        "|---" * (len(sigmas) + 2) + "|",
    ]
    for method in ORDER:
        if not any((s, method) in psnr for s in sigmas):
            continue
        cells = []
        for s in sigmas:
            p, q = psnr.get((s, method), {}), ssim.get((s, method), {})
            cells.append(
                f"{statistics.fmean(p.values()):.2f} / {statistics.fmean(q.values()):.3f}"
                if p
                else "–"
            )
        secs = [_seconds(rows, s, method) for s in sigmas]
        secs = [x for x in secs if x is not None]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {statistics.fmean(secs):.1f} |")
    if dataset in ("Set5", "Set14"):
        names = ("MLP", "DIP", "Knitwork")
        for i, name in enumerate(names):
            cells = []
            for s in sigmas:
                paper = PAPER_DENOISE.get((dataset, f"sigma={s}"))
                cells.append("–" if paper is None else f"{paper[i][0]:.2f} / {paper[i][1]:.2f}")
            lines.append(f"| paper: {name} (full size) | " + " | ".join(cells) + " | – |")
    if dataset == "CBSD68":
        cells = [f"{CBM3D_CBSD68[s]:.2f} / –" for s in sigmas]
        lines.append("| published CBM3D (full size, σ given) | " + " | ".join(cells) + " | – |")
    lines += [
        "",
        "| knitwork − method (paired SE, wins) | " + " | ".join(f"σ {s}" for s in sigmas) + " |",
        "|---" * (len(sigmas) + 1) + "|",
    ]
    for method in ORDER[1:]:
        cells = []
        for s in sigmas:
            d = paired(psnr.get((s, "knitwork"), {}), psnr.get((s, method), {}))
            cells.append(
                "–"
                if d is None
                else f"{d.mean:+.2f} ± {d.se if d.se is not None else float('nan'):.2f}, "
                f"{d.wins}/{d.n} ({verdict(d.mean, d.se)})"
            )
        if any(c != "–" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def picture(dataset: str, rows: list[dict]) -> str | None:
    """noisy | knitwork | mlp | nlm | bm3d-sigma | truth for the set's median-gain image at
    its picture σ, enlarged ×2, with centre crops enlarged ×6 below."""
    sigma = PICTURE[dataset]
    setting = f"sigma={sigma}"
    psnr = _scores(rows)
    ours, noisy_free = psnr.get((sigma, "knitwork"), {}), psnr.get((sigma, "bm3d-sigma"), {})
    common = sorted(ours.keys() & noisy_free.keys())
    if not common:
        return None
    gaps = sorted(common, key=lambda i: ours[i] - noisy_free[i])
    image = gaps[len(gaps) // 2]  # neither the best nor the worst case for us
    shown = ["input", "knitwork", "mlp", "nlm", "bm3d-sigma", "truth"]
    folder = OUT / dataset / setting
    paths = [folder / m / image for m in shown]
    if not all(p.is_file() for p in paths):
        return None
    h, w = load_image(paths[-1]).pixels.shape[:2]
    panels = [panel(p, (2 * w, 2 * h)) for p in paths]
    side = min(h, w) // 4
    top, left = (h - side) // 2, (w - side) // 2
    crops = [
        panel(p, (w, h))[top : top + side, left : left + side].repeat(6, 0).repeat(6, 1)
        for p in paths
    ]
    crops = [
        np.pad(c, ((0, 2 * h - len(c)), (0, 2 * w - c.shape[1]), (0, 0)), constant_values=1)
        for c in crops
    ]
    names = []
    for m in shown:
        score = psnr.get((sigma, m), {}).get(image)
        names.append(m if score is None else f"{m} {score:.2f} dB")
    sheet = contact_sheet(panels, names, crops, "centre, x6")  # ASCII: PIL's default font
    name = f"denoise-{dataset.lower()}.png"
    save_image(ROOT / "docs" / "images" / name, sheet)
    alt = f"{dataset} {image} at σ {sigma}: {', '.join(shown)}; centre crops below"
    return f"![{alt}](../images/{name})"


def report(args: argparse.Namespace) -> int:
    lines = [
        "Commands: `python benchmarks/denoise_sets.py run --sets "
        + " ".join(args.sets)
        + f" --crop {args.crop} --every-cbsd {args.every_cbsd}`, then "
        "`python benchmarks/denoise_sets.py report`; the bench lines it ran:",
        "",
    ]
    for dataset in args.sets:
        cmd = command(dataset, args.crop, _every(dataset, args), args.preset)
        lines.append(f"    {shlex.join(cmd)}")
    lines += [
        "",
        f"Machine: {describe()}.  ",
        f"Protocol (**reduced**): each image centre-cropped to {args.crop} × {args.crop} (no "
        f"downscaling); CBSD68 every {args.every_cbsd}th image of the sorted list; seeded "
        "Gaussian noise clipped to [0, 1], the same noisy image for every method; RGB PSNR "
        "(data range 1) and SSIM. `bm3d` estimates σ, `bm3d-sigma` is told it; the networks "
        "and NLM are not. The paper's and the published CBM3D rows are full-size images and "
        "are not strictly comparable. A difference is called ahead or behind only outside its "
        "paired standard error.",
        "",
    ]
    for dataset in args.sets:
        path = DATA / f"{dataset.lower()}.json"
        if not path.exists():
            lines += [f"### {dataset}", "", "not run yet.", ""]
            continue
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        lines += set_table(dataset, rows)
        shot = picture(dataset, rows)
        lines += ["", shot, ""] if shot else [""]
    publish_section(DOC, "sets", lines, "Denoising")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name, go in (("run", run), ("report", report)):
        p = sub.add_parser(name, help=f"{name} the bench per set" if name == "run" else
                           "write the 'sets' section of docs/benchmarks/denoise.md")  # fmt: skip
        p.add_argument("--sets", nargs="+", default=["CBSD68", "Set5", "Set14"])
        p.add_argument("--crop", type=int, default=128, help="centre crop side [128]")
        p.add_argument("--every-cbsd", type=int, default=4, help="CBSD68: every K-th image [4]")
        p.add_argument("--preset", default="fast-denoise")
        p.set_defaults(go=go)
    args = parser.parse_args()
    return args.go(args)


if __name__ == "__main__":
    sys.exit(main())
