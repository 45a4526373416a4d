"""The quality report's building blocks: which scores a suite ranks by, the methods and
settings in table order, per-image means, standard errors, win counts, the protocol line,
cell formats and the verdict lines. Used by quality_report.py."""

from __future__ import annotations

import math
import re
import statistics

from knitwork.ablation import ABLATION_STAGES
from pipeline.bench_suites import ABLATION, SUITES, methods_of, suite_task
from pipeline.bench_tables import Comparison

MISSING = "—"
NETWORKS = ("knitwork", "dip", "mlp")  # table order: the networks, then the classical tools
LABELS = {"psnr": "PSNR", "psnr_hole": "hole PSNR", "psnr_raw": "raw PSNR"}


def primary(suite: str) -> tuple[str, str]:
    """The suite's primary scores: the hole's for inpainting, the whole image's otherwise."""
    return ("psnr_hole", "ssim_hole") if suite_task(suite) == "inpaint" else ("psnr", "ssim")


def ordered_methods(suite: str, rows: list[dict]) -> list[str]:
    """The methods found: the ablation's stages in order, or the networks then the classical
    tools in the suite's order; any other name last, alphabetically."""
    known = list(ABLATION_STAGES if suite.startswith(ABLATION) else NETWORKS)
    known += [m for m in methods_of(suite) if m not in known]
    found = {r["method"] for r in rows}
    return sorted(found, key=lambda m: (known.index(m) if m in known else len(known), m))


def ordered_settings(suite: str, rows: list[dict]) -> list[str]:
    """The settings found, in the suite's order (any other in the rows' order, last)."""
    known = [s.name for s in SUITES[suite]]
    found = dict.fromkeys(r["setting"] for r in rows)
    return [s for s in known if s in found] + [s for s in found if s not in known]


def per_image(rows: list[dict], setting: str, method: str, key: str) -> dict[str, float]:
    """image → its ``key`` averaged over its repeats that succeeded."""
    values: dict[str, list[float]] = {}
    for r in rows:
        ok = r["status"] == "ok" and r.get(key) is not None
        if ok and r["setting"] == setting and r["method"] == method:
            values.setdefault(r["image"], []).append(r[key])
    return {image: statistics.fmean(v) for image, v in values.items()}


def standard_error(values: list[float]) -> float | None:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def best_on(rows: list[dict], setting: str, methods: list[str], key: str) -> dict[str, str]:
    """method → "k/n": the images (of n it restored) where its ``key`` is the highest."""
    scores = {m: per_image(rows, setting, m, key) for m in methods}
    top = {}
    for image in {i for s in scores.values() for i in s}:
        top[image] = max(s[image] for s in scores.values() if image in s)
    return {
        m: f"{sum(v == top[i] for i, v in s.items())}/{len(s)}" if s else MISSING
        for m, s in scores.items()
    }


def steps_of(row: dict) -> int | None:
    """A network row's step budget, from its ``params`` ("knitwork, 500 steps, config …")."""
    found = re.search(r"(\d+) steps", row.get("params") or "")
    return int(found.group(1)) if found else None


def _values(rows: list[dict], key: str) -> list:
    return sorted({r.get(key) for r in rows}, key=lambda v: (v is None, v or 0))


def protocol(dataset: str, rows: list[dict]) -> str:
    """One line: set, images, size, repeats, the networks' steps, a cell's n."""
    images = len({r["image"] for r in rows})
    repeats = sorted({r.get("repeat", 0) for r in rows})
    sides = _values(rows, "max_side")
    size = ", ".join("full size" if s is None else f"longest side {s} px" for s in sides)
    crops = [c for c in _values(rows, "centre_crop") if c is not None]
    size += "".join(f", centre {c}×{c}" for c in crops)
    steps = sorted({s for r in rows if (s := steps_of(r)) is not None})
    budget = f"; networks {'/'.join(map(str, steps))} steps" if steps else ""
    seeds = f"r = 0…{repeats[-1]}" if len(repeats) > 1 else f"r = {repeats[0]}"
    return (
        f"*Protocol: {dataset}, {images} images, {size}, {len(repeats)} repeat"
        f"{'s' if len(repeats) > 1 else ''} ({seeds}: seed = the image's + r){budget}; "
        f"a cell's n = {images} images × {len(repeats)} = {images * len(repeats)} rows.*"
    )


def number(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def seconds_cell(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def plus_minus(value: float | None, se: float | None) -> str:
    return number(value) + ("" if value is None or se is None else f" ± {se:.2f}")


def comparison_cell(c: Comparison | None) -> str:
    if c is None:
        return MISSING
    d = c.diff
    se = MISSING if d.se is None else f"{d.se:.2f}"
    return f"{d.mean:+.2f} ± {se}, {d.wins}/{d.n} ({d.verdict})"


def verdicts(comparisons: list[Comparison], order: list[str] | None = None) -> list[str]:
    """One line per comparison pair (in the ``order`` of the other method): the settings where
    it is ahead, behind (both outside ± SE) and within SE."""
    pairs: dict[tuple[str, str], dict[str, list[str]]] = {}
    rank = {m: i for i, m in enumerate(order or [])}
    for c in sorted(comparisons, key=lambda c: rank.get(c.other, len(rank))):
        kinds = pairs.setdefault((c.method, c.other), {"ahead": [], "behind": [], "within SE": []})
        kinds[c.diff.verdict].append(c.setting)
    lines = []
    for (method, other), kinds in pairs.items():
        total = sum(len(v) for v in kinds.values())
        said = [
            f"{kind} at {'every setting' if len(found) == total > 1 else ', '.join(found)}"
            for kind, found in kinds.items()
            if found
        ]
        lines.append(f"- {method} vs {other}: {'; '.join(said)}.")
    return lines
