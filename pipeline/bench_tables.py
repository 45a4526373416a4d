"""The bench's tables, pure functions of its rows: ``means`` (mean scores per setting and
method), ``paired_summary`` (a method's score minus another's, paired over images: mean, paired
SE, wins, verdict), ``paired_table`` and ``table`` (the printed summary). Report scripts reuse
them."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from pipeline.bench_suites import ABLATION, KERNEL_SCORES, methods_of, suite_task
from pipeline.tracking import metric_key

SCORES = (
    "psnr", "ssim", "psnr_hole", "ssim_hole", "psnr_raw", "ssim_raw", "seconds", *KERNEL_SCORES
)  # fmt: skip


def row_order(suite: str, settings: list[str]):
    def key(row: dict):
        setting, method = settings.index(row["setting"]), _rank(suite, row["method"])
        return setting, method, row["image"], row.get("repeat", 0)

    return key


def _rank(suite: str, method: str) -> int:
    methods = methods_of(suite)
    return methods.index(method) if method in methods else len(methods)


def means(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (setting, method): the mean of each score over the images that succeeded."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["method"]), []).append(row)
    out = {}
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        out[key] = {"images": len(ok), "failed": len(group) - len(ok)}
        for score in SCORES:
            values = [r[score] for r in ok if r.get(score) is not None]
            out[key][score] = statistics.fmean(values) if values else None
    return out


def means_metrics(rows: list[dict]) -> dict[str, float]:
    return {
        metric_key("mean", score, method, setting): value
        for (setting, method), scores in means(rows).items()
        for score, value in scores.items()
        if value is not None and score in SCORES
    }


def table(rows: list[dict], suite: str) -> str:
    """Mean scores per setting and method (over images and repeats), settings in the rows'
    order; * marks each setting's best (hole PSNR for inpainting, PSNR otherwise). Raw: the
    paper's protocol, the whole raw output (``psnr_raw``, ``ssim_raw``). SR adds the mean
    learned kernel's error and the delta start's (``kernel_scores``). Then the paired
    differences of every suite (``paired_table``)."""
    key = paired_scores(suite)[0]
    stats = means(rows)
    kernels = suite == "sr"
    lines = [
        f"{'setting':12s} {'method':14s} {'PSNR':>7s} {'SSIM':>6s} {'hole PSNR':>9s} "
        f"{'hole SSIM':>9s} {'raw PSNR':>8s} {'raw SSIM':>8s} {'s/img':>7s} {'n':>3s}"
        + (f" {'kernel err':>10s} {'start':>6s}" if kernels else "")
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        here = {m: v for (s, m), v in stats.items() if s == setting}
        scored = [v[key] for v in here.values() if v[key] is not None]
        best = max(scored) if scored else None
        for method in sorted(here, key=lambda m: _rank(suite, m)):
            v = here[method]
            mark = "*" if best is not None and v[key] == best else " "
            lines.append(
                f"{setting:12s} {method:14s} {_f(v['psnr'])}{mark if key == 'psnr' else ' '}"
                f"{_f(v['ssim'], 6, 3)} {_f(v['psnr_hole'], 8)}{mark if key != 'psnr' else ' '}"
                f"{_f(v['ssim_hole'], 9, 3)} {_f(v['psnr_raw'], 8)} {_f(v['ssim_raw'], 8, 3)}"
                f" {_f(v['seconds'], 7, 1)} {v['images']:3d}"
                + (_kernel_columns(v) if kernels else "")
                + (f"  ({v['failed']} failed)" if v["failed"] else "")
            )
    comparison = paired_table(rows, suite)
    return "\n".join(lines + (["", comparison] if comparison else []))


def _kernel_columns(scores: dict) -> str:
    """SR: the mean kernel error and the delta start's (– where no kernel was learned)."""
    return f" {_f(scores['kernel_error'], 10, 3)} {_f(scores['kernel_error_start'], 6, 3)}"


@dataclass(frozen=True)
class Paired:
    """A − B over the images both have: mean, paired standard error, wins of A."""

    mean: float
    se: float | None  # std (n − 1) of the per-image differences / √n; None for one image
    wins: int  # images where A is higher
    n: int

    @property
    def verdict(self) -> str:
        """Ahead or behind only outside the paired SE, else "within SE" (one image has no SE:
        always within)."""
        if self.se is None or abs(self.mean) <= self.se:
            return "within SE"
        return "ahead" if self.mean > 0 else "behind"


def paired(a: dict[str, float], b: dict[str, float]) -> Paired | None:
    """``a`` − ``b`` (image → score) on their common images; None when they share none."""
    diffs = [a[image] - b[image] for image in sorted(a.keys() & b.keys())]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return Paired(statistics.fmean(diffs), se, sum(d > 0 for d in diffs), len(diffs))


# the scores compared pair by pair, the suite's primary one first
PAIRED_SCORES = {"inpaint": ("psnr_hole", "psnr"), "denoise": ("psnr",), "sr": ("psnr",)}
_LABELS = {"psnr": "PSNR", "psnr_hole": "hole PSNR", "psnr_raw": "raw PSNR"}


def paired_scores(suite: str) -> tuple[str, ...]:
    """The scores a suite's paired table compares, its primary one first."""
    return PAIRED_SCORES[suite_task(suite)]


@dataclass(frozen=True)
class Comparison:
    """``method``'s ``score`` minus ``other``'s in one setting, paired over images."""

    setting: str
    score: str  # a row field: psnr, psnr_hole, ...
    method: str  # the Knitwork, or in the ablation a stage
    other: str  # the method compared with, or the previous stage
    diff: Paired  # ``method`` − ``other``: mean, SE, wins, n, verdict


def paired_summary(rows: list[dict], suite: str, score: str) -> list[Comparison]:
    """Per setting (in the rows' order): the Knitwork minus each other method, or in an
    ablation suite each stage minus the previous stage present, on ``score``, paired over the
    images both restored; an image's value is its mean over the repeats both have."""
    values = _by_image(rows, score)
    found = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        present = sorted({m for s, m in values if s == setting}, key=lambda m: _rank(suite, m))
        for method, other in _pairs(suite, present):
            d = _paired_repeats(values[setting, method], values[setting, other])
            if d is not None:
                found.append(Comparison(setting, score, method, other, d))
    return found


def _by_image(rows: list[dict], score: str) -> dict[tuple[str, str], dict[str, dict]]:
    """(setting, method) → image → repeat → ``score``, of the rows that succeeded."""
    values: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get(score) is not None:
            images = values.setdefault((r["setting"], r["method"]), {})
            images.setdefault(r["image"], {})[r.get("repeat", 0)] = r[score]
    return values


def _pairs(suite: str, present: list[str]) -> list[tuple[str, str]]:
    if suite.startswith(ABLATION):
        return list(zip(present[1:], present[:-1], strict=True))
    return [("knitwork", m) for m in present if m != "knitwork"] if "knitwork" in present else []


def _paired_repeats(a: dict[str, dict], b: dict[str, dict]) -> Paired | None:
    """``paired`` on per-image means over the repeats both ``a`` and ``b`` have."""
    ours, theirs = {}, {}
    for image in a.keys() & b.keys():
        common = a[image].keys() & b[image].keys()
        if common:
            ours[image] = statistics.fmean(a[image][r] for r in common)
            theirs[image] = statistics.fmean(b[image][r] for r in common)
    return paired(ours, theirs)


def paired_table(rows: list[dict], suite: str) -> str:
    """``paired_summary`` of each of the suite's scores as text: mean difference, paired SE,
    wins k/n and the verdict. Empty when nothing pairs (no Knitwork row, one stage)."""
    lines = [
        f"{_LABELS.get(c.score, c.score):9s} {c.setting:12s} {c.method + ' − ' + c.other:28s} "
        f"{c.diff.mean:+7.2f} {_f(c.diff.se, 6)} {f'{c.diff.wins}/{c.diff.n}':>7s}  "
        f"{c.diff.verdict}"
        for score in paired_scores(suite)
        for c in paired_summary(rows, suite, score)
    ]
    if not lines:
        return ""
    what = "each stage − the previous one" if suite.startswith(ABLATION) else "knitwork − method"
    return "\n".join(
        [
            f"{what}, paired over images (an image's value: its mean over repeats)",
            "SE: std of the per-image differences / √n; wins: images ahead; ahead or behind "
            "only outside ± SE",
            f"{'score':9s} {'setting':12s} {'comparison':28s} {'Δ dB':>7s} {'SE':>6s} "
            f"{'wins':>7s}  verdict",
            *lines,
        ]
    )


def _f(value, width: int = 7, digits: int = 2) -> str:
    return f"{'–':>{width}s}" if value is None else f"{value:{width}.{digits}f}"
