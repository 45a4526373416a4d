"""Denoising experiments on a reduced protocol: ablations of the denoising switches, ensembles,
the Fourier unit at two sizes, each beside NLM and BM3D on the same noisy images.

    python benchmarks/denoise.py ablate [--images ../shared/datasets/tuning] [--count 6]
        [--longest 481] [--side 128] [--sigmas 25] [--base fast-denoise]
        [--variants "name=field=value,field=value;..."] [--reference NAME] [--section NAME]
    python benchmarks/denoise.py ensemble [--members 1,2,4,8] ...
    python benchmarks/denoise.py sizes [--sides 64,128] ...

Images: the first --count (sorted) of --images, downscaled to a longest side of --longest
(481: CBSD68's size) and centre-cropped to --side × --side, a reduced protocol. Noise: seeded
white Gaussian noise of each σ (0–255), the same for every method. A variant is the --base
preset with fields changed by name (any field of any section: ``scale=2,early_stop=holdout``).
Every fit's row is cached in ``out/denoise/rows.jsonl`` (keyed by everything that makes it),
so a rerun only computes what is new. Tables go to docs/benchmarks/denoise.md between markers
``<!-- SECTION: start/end -->``: mean PSNR, the difference from --reference with its paired
standard error over images, wins over images, seconds per image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from core import load_reduced
from machine import describe, publish_section

from knitwork.classical import denoise_bm3d, denoise_bm3d_sigma, denoise_nlm
from knitwork.config import Config, as_baseline
from knitwork.degradation import Degradation
from knitwork.metrics import psnr
from knitwork.packs import fit_packed
from knitwork.presets import get_preset

DOC = Path("docs/benchmarks/denoise.md")
CACHE = Path("out/denoise/rows.jsonl")


CLASSICAL = {
    "nlm": lambda obs, sigma: denoise_nlm(obs),
    "bm3d": lambda obs, sigma: denoise_bm3d(obs),
    "bm3d-sigma": lambda obs, sigma: denoise_bm3d_sigma(obs, sigma / 255),
}


def load_crop(path: Path, longest: int, side: int) -> np.ndarray:
    """``path`` downscaled to ``longest`` px, centre-cropped to side × side (or less)."""
    image = load_reduced(path, longest)
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def with_fields(config: Config, spec: str) -> Config:
    """``config`` with ``field=value,...`` changed; a field is found by name in any section
    (``model.encoding.scale`` may be written ``scale``; a dotted path picks one explicitly)."""
    data = config.to_dict()
    for item in filter(None, (s.strip() for s in re.split(r",(?![^\[]*\])", spec))):
        key, _, raw = item.partition("=")
        value = _parse(raw)
        if key == "method" and value == "mlp":
            config = as_baseline(Config.from_dict(data))
            data = config.to_dict()
            continue
        holders = _find(data, key)
        if len(holders) != 1:
            raise SystemExit(f"field {key!r}: {len(holders)} matches; write its dotted path")
        holder, name = holders[0]
        holder[name] = value
    return Config.from_dict(data)


def _parse(raw: str):
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _find(data: dict, key: str) -> list[tuple[dict, str]]:
    if "." in key:
        *path, name = key.split(".")
        for part in path:
            data = data[part]
        return [(data, name)] if name in data else []
    found = [(data, key)] if key in data else []
    for value in data.values():
        if isinstance(value, dict):
            found += _find(value, key)
    return found


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cached_rows(cache: Path = CACHE) -> dict[str, dict]:
    """The rows cached in ``cache`` (JSON lines), by key; the last line of a key wins."""
    if not cache.exists():
        return {}
    rows = {}
    for line in cache.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["key"]] = row
    return rows


def store_row(row: dict, cache: Path = CACHE) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


class Runner:
    """Fits and classical runs on the protocol's images, cached by everything that makes a row."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        paths = sorted(p for p in Path(args.images).iterdir() if p.suffix in (".png", ".jpg"))
        self.paths = paths[: args.count]
        self.rows = cached_rows()

    def noisy(self, path: Path, sigma: float, side: int):
        clean = load_crop(path, self.args.longest, side)
        obs, truth = Degradation(task="denoise", sigma=sigma).apply(clean, self.args.seed)
        return obs, truth

    def classical(self, method: str, path: Path, sigma: float, side: int) -> dict:
        key = cache_key(
            kind="classical",
            method=method,
            image=path.name,
            sigma=sigma,
            side=side,
            longest=self.args.longest,
            seed=self.args.seed,
        )
        if key not in self.rows:
            self.rows = cached_rows()  # another run may have made it meanwhile
        if key not in self.rows:
            obs, truth = self.noisy(path, sigma, side)
            start = time.perf_counter()
            restored = CLASSICAL[method](obs, sigma)
            row = {
                "key": key,
                "method": method,
                "image": path.stem,
                "sigma": sigma,
                "side": side,
                "psnr": psnr(restored, truth),
                "seconds": time.perf_counter() - start,
            }
            self.rows[key] = row
            store_row(row)
        return self.rows[key]

    def fit(
        self, name: str, config: Config, path: Path, sigma: float, side: int, members: int = 1
    ) -> dict:
        """One image fitted by ``members`` seeds (packed), their images averaged."""
        key = cache_key(
            kind="fit",
            config=config.identity(),
            image=path.name,
            sigma=sigma,
            side=side,
            longest=self.args.longest,
            seed=self.args.seed,
            members=members,
        )
        if key not in self.rows:
            self.rows = cached_rows()  # another run may have made it meanwhile
        if key not in self.rows:
            obs, truth = self.noisy(path, sigma, side)
            seeds = list(range(members))
            start = time.perf_counter()
            results = fit_packed(
                [obs] * members, config, seeds=seeds, ground_truths=[truth] * members, pack=members
            )
            seconds = time.perf_counter() - start
            image = np.mean([r.image for r in results], axis=0)
            first = results[0]
            history = [(int(h["step"]), h["psnr"]) for h in first.history if "psnr" in h]
            best = max(history, key=lambda x: x[1]) if history else (None, None)
            row = {
                "key": key,
                "method": name,
                "image": path.stem,
                "sigma": sigma,
                "side": side,
                "members": members,
                "psnr": psnr(image, truth),
                "member_psnr": statistics.fmean(psnr(r.image, truth) for r in results),
                "seconds": seconds,
                "steps": first.history[-1]["step"] if first.history else 0,
                "stopped_at": first.stopped_at,
                "best_step": best[0],
                "best_psnr": best[1],
            }
            self.rows[key] = row
            store_row(row)
            print(
                f"  {name} {path.stem} σ{sigma:g} {side}px ×{members}: {row['psnr']:.2f} dB "
                f"(iterate's best {best[1]:.2f} at {best[0]}), {seconds:.0f} s, "
                f"stopped at {first.stopped_at}",
                flush=True,
            )
        return self.rows[key]


def variants(text: str) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, spec = part.partition("=")
        out.append((name.strip(), spec.strip()))
    return out


def paired(a: list[float], b: list[float]) -> tuple[float, float, int]:
    """Mean of a − b, its paired standard error, and how many a > b."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return statistics.fmean(diffs), se, sum(d > 0 for d in diffs)


def summary(rows: dict[str, list[dict]], reference: str, sigma: float) -> list[str]:
    """One table: each method's mean, its difference from ``reference`` (paired SE), wins."""
    lines = [
        f"| σ {sigma:g}: method | PSNR | − {reference} (paired SE) | wins | s / image "
        "| stop step |",
        "|---|---|---|---|---|---|",
    ]
    ref = [r["psnr"] for r in rows[reference]]
    for name, sel in rows.items():
        values = [r["psnr"] for r in sel]
        mean = statistics.fmean(values)
        d, se, wins = paired(values, ref)
        diff = "—" if name == reference else f"{d:+.2f} ± {se:.2f}"
        won = "—" if name == reference else f"{wins}/{len(values)}"
        stops = [r.get("stopped_at") or r.get("steps") for r in sel if "steps" in r]
        stop = f"{statistics.fmean(stops):.0f}" if stops else "—"
        seconds = statistics.fmean(r["seconds"] for r in sel)
        lines.append(f"| {name} | {mean:.2f} | {diff} | {won} | {seconds:.1f} | {stop} |")
    return lines


def section(name: str, lines: list[str]) -> None:
    publish_section(DOC, name, lines, "Denoising")


def header(runner: Runner, what: str) -> list[str]:
    args = runner.args
    command = "python benchmarks/denoise.py " + " ".join(
        f"'{a}'" if (" " in a or ";" in a) else a for a in sys.argv[1:]
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = ", ".join(p.stem for p in runner.paths)
    return [
        f"Command: `{command}`  ",
        f"Machine: {describe()}; finished {stamp}.  ",
        f"Protocol ({what}): {names} from `{args.images}`, downscaled to a longest side of "
        f"{args.longest} px and centre-cropped to {args.side} px (a **reduced protocol**), "
        f"seeded Gaussian noise (seed {args.seed}), base preset `{args.base}`, fit seed 0.",
        "",
    ]


def ablate(args: argparse.Namespace) -> None:
    runner = Runner(args)
    base = get_preset(args.base)
    chosen = variants(args.variants)
    lines: list[str] = []
    for sigma in args.sigmas:
        rows: dict[str, list[dict]] = {}
        for path in runner.paths:
            for method in args.classical:
                rows.setdefault(method, []).append(runner.classical(method, path, sigma, args.side))
            for name, spec in chosen:
                row = runner.fit(name, with_fields(base, spec), path, sigma, args.side)
                rows.setdefault(name, []).append(row)
        lines += [*summary(rows, args.reference or chosen[0][0], sigma), ""]
    lines += ["Variants (fields changed from the base preset):", ""]
    lines += [f"- **{name}**: `{spec or '(none)'}`" for name, spec in chosen]
    section(args.section or "ablation", [*header(runner, "ablation"), *lines])


def ensemble(args: argparse.Namespace) -> None:
    runner = Runner(args)
    config = with_fields(get_preset(args.base), args.spec)
    lines = [
        f"Each image fitted {', '.join(map(str, args.members))} times with seeds 0…K−1 (weights "
        f"and Fourier draws differ), packed in one process, the K images averaged. Fields "
        f"changed from `{args.base}`: `{args.spec or '(none)'}`.",
        "",
    ]
    for sigma in args.sigmas:
        rows: dict[str, list[dict]] = {}
        for path in runner.paths:
            for method in args.classical:
                rows.setdefault(method, []).append(runner.classical(method, path, sigma, args.side))
            for k in args.members:
                name = f"ensemble K={k}"
                rows.setdefault(name, []).append(
                    runner.fit(name, config, path, sigma, args.side, k)
                )
        lines += [*summary(rows, f"ensemble K={args.members[0]}", sigma), ""]
    section(args.section or "ensemble", [*header(runner, "ensembles"), *lines])


def sizes(args: argparse.Namespace) -> None:
    runner = Runner(args)
    base = get_preset(args.base)
    chosen = variants(args.variants)
    lines = [
        "The same variants at each crop side (the --side above is ignored here).",
        "",
    ]
    for sigma in args.sigmas:
        for side in args.sides:
            rows: dict[str, list[dict]] = {}
            for path in runner.paths:
                for method in args.classical:
                    rows.setdefault(method, []).append(runner.classical(method, path, sigma, side))
                for name, spec in chosen:
                    row = runner.fit(name, with_fields(base, spec), path, sigma, side)
                    rows.setdefault(name, []).append(row)
            lines += [f"**{side} px**", ""]
            lines += [*summary(rows, args.reference or chosen[0][0], sigma), ""]
    what = f"sizes {', '.join(map(str, args.sides))} px"
    section(args.section or "sizes", [*header(runner, what), *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, run in (("ablate", ablate), ("ensemble", ensemble), ("sizes", sizes)):
        p = sub.add_parser(name)
        p.add_argument("--images", default="../shared/datasets/tuning")
        p.add_argument("--count", type=int, default=6)
        p.add_argument("--longest", type=int, default=481)
        p.add_argument("--side", type=int, default=128)
        p.add_argument("--sigmas", type=lambda s: [float(x) for x in s.split(",")], default=[25.0])
        p.add_argument("--seed", type=int, default=0, help="noise seed")
        p.add_argument("--base", default="fast-denoise")
        p.add_argument("--variants", default="base=")
        p.add_argument("--reference", help="the row differences are taken against")
        p.add_argument(
            "--classical",
            type=lambda s: [x for x in s.split(",") if x],
            default=["nlm", "bm3d", "bm3d-sigma"],
        )
        p.add_argument("--section", help="doc section to write [the command's name]")
        p.add_argument("--spec", default="", help="ensemble: fields changed from --base")
        p.add_argument(
            "--members", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8]
        )
        p.add_argument("--sides", type=lambda s: [int(x) for x in s.split(",")], default=[64, 128])
        p.set_defaults(run=run)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
