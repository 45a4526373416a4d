"""Inpainting experiments on the tuning set: variants of a preset beside the classical fills
(biharmonic, Telea, Navier–Stokes) on the same holes, scored on the hole.

    python benchmarks/inpaint.py ablate [--images ../shared/datasets/tuning] [--count 10]
        [--longest 64] [--holes square:0.01,square:0.04] [--repeats 2]
        [--base fast-inpaint] [--variants "name=field=value,...;..."] [--reference NAME]
        [--section NAME]

Images: the first --count (sorted) of --images, downscaled to a longest side of --longest (64:
the quality report's reduced size). Holes: KIND:FILL, KIND one of the seeded masks of
``knitwork.degradation.Degradation`` (square; scratch and text where that version has them),
FILL the fraction of pixels; each image gets --repeats holes (seeds 0 … R−1), the same for
every method. A variant is the --base preset with fields changed by name, as in
benchmarks/denoise.py (``scale=0.05,unit=pixel,alpha=1``). Every row is cached in
``out/inpaint/rows.jsonl`` (keyed by everything that makes it), so a rerun only computes what
is new. Tables go to docs/benchmarks/inpaint.md between ``<!-- SECTION: start/end -->``:
mean hole PSNR over (image, seed) pairs, the difference from --reference with its paired
standard error over images (each image's seeds averaged first) and the images won.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from core import load_reduced
from denoise import cache_key, cached_rows, paired, store_row, variants, with_fields
from machine import describe, publish_section

from knitwork.classical import classical
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.metrics import psnr
from knitwork.presets import get_preset

DOC = Path("docs/benchmarks/inpaint.md")
CACHE = Path("out/inpaint/rows.jsonl")
CLASSICAL = ("biharmonic", "telea", "navier-stokes")


def degradation(hole: str) -> Degradation:
    kind, _, fill = hole.partition(":")
    fields = {f.name for f in dataclasses.fields(Degradation)}
    extra = {"mask": kind} if "mask" in fields else {}
    if kind != "square" and not extra:
        raise SystemExit(f"this Degradation has no mask {kind!r}")
    return Degradation(task="inpaint", fill_ratio=float(fill), **extra)


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        paths = sorted(p for p in Path(args.images).iterdir() if p.suffix in (".png", ".jpg"))
        self.paths = paths[: args.count]
        self.rows = cached_rows(CACHE)

    def observed(self, path: Path, hole: str, seed: int):
        clean = load_reduced(path, self.args.longest)
        return degradation(hole).apply(clean, seed)

    def row(self, name: str, what, path: Path, hole: str, seed: int) -> dict:
        """One restoration: ``what`` is a classical tool's name or a Config."""
        ident = what if isinstance(what, str) else what.identity()
        longest = self.args.longest
        key = cache_key(what=ident, image=path.name, hole=hole, seed=seed, longest=longest)
        if key not in self.rows:
            self.rows = cached_rows(CACHE)  # another run may have made it meanwhile
        if key in self.rows:
            return self.rows[key]
        obs, truth = self.observed(path, hole, seed)
        start = time.perf_counter()
        if isinstance(what, str):
            restored = classical("inpaint", what).run(obs, None)
        else:
            restored = fit(obs, what, seed=seed).image
        seconds = time.perf_counter() - start
        row = {
            "key": key,
            "method": name,
            "image": path.stem,
            "hole": hole,
            "seed": seed,
            "psnr_hole": psnr(restored, truth, obs.hole),
            "psnr": psnr(restored, truth),
            "seconds": seconds,
        }
        self.rows[key] = row
        store_row(row, CACHE)
        if not isinstance(what, str):
            print(f"  {name} {path.stem} {hole} s{seed}: {row['psnr_hole']:.2f} dB hole, "
                  f"{seconds:.0f} s", flush=True)  # fmt: skip
        return row


def summary(rows: dict[str, list[dict]], reference: str, hole: str) -> list[str]:
    """Mean hole PSNR per method; − reference paired over images (seeds averaged first)."""
    lines = [
        f"| {hole}: method | hole PSNR | − {reference} (paired SE) | images won | s / fit |",
        "|---|---|---|---|---|",
    ]

    def per_image(sel: list[dict]) -> list[float]:
        by: dict[str, list[float]] = {}
        for r in sel:
            by.setdefault(r["image"], []).append(r["psnr_hole"])
        return [statistics.fmean(by[k]) for k in sorted(by)]

    ref = per_image(rows[reference])
    for name, sel in rows.items():
        values = per_image(sel)
        d, se, wins = paired(values, ref)
        diff = "—" if name == reference else f"{d:+.2f} ± {se:.2f}"
        won = "—" if name == reference else f"{wins}/{len(values)}"
        seconds = statistics.fmean(r["seconds"] for r in sel)
        lines.append(
            f"| {name} | {statistics.fmean(values):.2f} | {diff} | {won} | {seconds:.1f} |"
        )
    return lines


def ablate(args: argparse.Namespace) -> None:
    runner = Runner(args)
    base = get_preset(args.base)
    chosen = variants(args.variants)
    reference = args.reference or "biharmonic"
    lines: list[str] = []
    for hole in args.holes:
        rows: dict[str, list[dict]] = {}
        for path in runner.paths:
            for seed in range(args.repeats):
                for method in args.classical:
                    rows.setdefault(method, []).append(runner.row(method, method, path, hole, seed))
                for name, spec in chosen:
                    row = runner.row(name, with_fields(base, spec), path, hole, seed)
                    rows.setdefault(name, []).append(row)
        lines += [*summary(rows, reference, hole), ""]
    lines += ["Variants (fields changed from the base preset):", ""]
    lines += [f"- **{name}**: `{spec or '(none)'}`" for name, spec in chosen]
    command = "python benchmarks/inpaint.py " + " ".join(
        f"'{a}'" if (" " in a or ";" in a) else a for a in sys.argv[1:]
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = ", ".join(p.stem for p in runner.paths)
    head = [
        f"Command: `{command}`  ",
        f"Machine: {describe()}; finished {stamp}.  ",
        f"Protocol: {names} from `{args.images}`, downscaled to a longest side of "
        f"{args.longest} px (a **reduced protocol**), {args.repeats} seeded holes per image "
        f"(seeds 0…{args.repeats - 1}), base preset `{args.base}`, fit seed = hole seed.",
        "",
    ]
    publish_section(DOC, args.section or "ablation", [*head, *lines], "Inpainting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ablate")
    p.add_argument("--images", default="../shared/datasets/tuning")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--longest", type=int, default=64)
    p.add_argument(
        "--holes", type=lambda s: [x for x in s.split(",") if x], default=["square:0.02"]
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--base", default="fast-inpaint")
    p.add_argument("--variants", default="base=")
    p.add_argument("--reference", help="the row differences are taken against [biharmonic]")
    p.add_argument(
        "--classical", type=lambda s: [x for x in s.split(",") if x], default=list(CLASSICAL)
    )
    p.add_argument("--section", help="doc section to write [ablation]")
    p.set_defaults(run=ablate)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
