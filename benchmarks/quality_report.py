"""docs/benchmarks/quality.md from the bench's JSON rows, as evidence: per set and suite the
means (± SE over images, images where each method is best), the Knitwork's paired difference
from each other method (± paired SE, wins, a verdict that says ahead or behind only outside the
error), the paper's published numbers apart, the paper's ablation, one picture per task.
Called by `quality.py report`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from machine import describe, publish
from quality_cells import (
    LABELS,
    MISSING,
    NETWORKS,
    best_on,
    comparison_cell,
    number,
    ordered_methods,
    ordered_settings,
    per_image,
    plus_minus,
    primary,
    protocol,
    seconds_cell,
    standard_error,
    steps_of,
    verdicts,
)
from quality_paper import PAPER_DENOISE, PAPER_INPAINT_HOLE, PAPER_INPAINT_WHOLE, PAPER_SR
from quality_pictures import contact_sheet, crop_box, panel, resize

from knitwork.io import load_image, save_image
from knitwork.presets import get_preset
from pipeline.bench_suites import ABLATION, SUITES, suite_task
from pipeline.bench_tables import means, paired_summary

NOTES_MARK = "<!-- notes: kept by quality.py report -->"
SETS = ("Set5", "Set14")
PICTURE = {
    "inpaint": ("Set5", "fill=0.04", "butterfly.png"),
    "denoise": ("Set5", "sigma=40", "head.png"),
    "sr": ("Set5", "x4/round", "butterfly.png"),
}
TITLES = (
    ("inpaint", "Inpainting (Table 1)"),
    ("denoise", "Denoising (Table 3)"),
    ("sr", "Blind super-resolution (Table 2)"),
)
OTHER = {"inpaint": "DIP", "denoise": "DIP", "sr": "SinGAN"}


def load_rows(data: Path) -> dict[tuple[str, str], list[dict]]:
    """(set, suite) → its rows, for every JSON file found (task and ablation suites)."""
    rows = {}
    for dataset in SETS:
        for suite in SUITES:
            path = data / f"{dataset.lower()}-{suite}.json"
            if path.is_file():
                rows[dataset, suite] = json.loads(path.read_text())["rows"]
    return rows


def at_paper_size(suite: str, rows: list[dict]) -> bool:
    """True when every Knitwork row ran at full size (no max_side, no centre crop) with the
    step budget of the paper's preset (paper-TASK): the rows do not name their preset, so its
    size and steps are what is checked."""
    steps = get_preset(f"paper-{suite_task(suite)}").optim.steps
    ours = [r for r in rows if r["method"] == "knitwork" and r["status"] == "ok"]
    return bool(ours) and all(
        r.get("max_side") is None and r.get("centre_crop") is None and steps_of(r) == steps
        for r in ours
    )


def mean_table(suite: str, rows: list[dict]) -> list[str]:
    """Per setting and method: the primary score's mean ± SE over images (an image's value:
    its mean over repeats) and SSIM, the whole-image PSNR (inpainting), the raw PSNR/SSIM,
    seconds, the images where it is best, and n (rows that succeeded)."""
    p, s = primary(suite)
    inpaint = p == "psnr_hole"
    head = [
        "setting", "method", f"{LABELS[p]} ± SE", "hole SSIM" if inpaint else "SSIM",
        *(["PSNR"] if inpaint else []), "raw PSNR", "raw SSIM", "s/img", "best on", "n",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stats = means(rows)
    methods = ordered_methods(suite, rows)
    for setting in ordered_settings(suite, rows):
        here = [m for m in methods if (setting, m) in stats]
        best = best_on(rows, setting, here, p)
        top = max(
            (stats[setting, m][p] for m in here if stats[setting, m][p] is not None), default=None
        )
        for i, method in enumerate(here):
            v = stats[setting, method]
            score = plus_minus(
                v[p], standard_error(list(per_image(rows, setting, method, p).values()))
            )
            cells = [
                setting if i == 0 else "",
                f"**{method}**" if method == "knitwork" else method,
                f"**{score}**" if v[p] is not None and v[p] == top else score,
                number(v[s]),
                *([number(v["psnr"])] if inpaint else []),
                number(v["psnr_raw"]),
                number(v["ssim_raw"]),
                seconds_cell(v["seconds"]),
                best[method],
                str(v["images"]) + (f" ({v['failed']} failed)" if v["failed"] else ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_table(dataset: str, suite: str, rows: list[dict], score: str) -> list[str]:
    """Rows: settings; columns: knitwork − each other method (``paired_summary``), and − the
    paper's Knitwork only for rows at the paper's size and steps."""
    found = {(c.setting, c.other): c for c in paired_summary(rows, suite, score)}
    others = [m for m in ordered_methods(suite, rows) if any(o == m for _, o in found)]
    gap = score == primary(suite)[0] and at_paper_size(suite, rows)
    head = ["setting", *(f"knitwork − {m}" for m in others)]
    head += ["− paper Knitwork (no SE)"] if gap else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stats = means(rows)
    for setting in ordered_settings(suite, rows):
        cells = [setting, *(comparison_cell(found.get((setting, m))) for m in others)]
        if gap:
            ours = stats.get((setting, "knitwork"), {}).get(score)
            paper = paper_knitwork(suite, dataset, setting)
            cells.append(MISSING if ours is None or paper is None else f"{ours - paper:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *verdicts(list(found.values()), others)]


def paper_table(dataset: str, suite: str) -> list[str]:
    """The paper's published PSNR/SSIM for this set (MLP, DIP or SinGAN, Knitwork)."""
    names = ("MLP", OTHER[suite], "Knitwork")
    if suite == "inpaint":
        tables = (("hole", PAPER_INPAINT_HOLE), ("whole", PAPER_INPAINT_WHOLE))
    else:
        tables = (("", PAPER_SR if suite == "sr" else PAPER_DENOISE),)
    head = ["setting", *(f"{n} {kind}".strip() for kind, _ in tables for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting in [s.name for s in SUITES[suite] if (dataset, s.name) in tables[0][1]]:
        cells = [f"{p:.2f}/{s:.2f}" for _, t in tables for p, s in t[dataset, setting]]
        lines.append("| " + " | ".join([setting, *cells]) + " |")
    return lines


def paper_knitwork(suite: str, dataset: str, setting: str) -> float | None:
    table = (
        PAPER_INPAINT_HOLE if suite == "inpaint" else PAPER_SR if suite == "sr" else PAPER_DENOISE
    )
    entry = table.get((dataset, setting))
    return entry[2][0] if entry else None


def raw_differs(rows: list[dict]) -> bool:
    """Whether any row's raw PSNR (the paper's protocol) differs from its PSNR."""
    return any(
        r.get("psnr_raw") is not None and abs(r["psnr_raw"] - (r["psnr"] or 0)) > 1e-3 for r in rows
    )


def ablation_table(suite: str, rows: list[dict]) -> list[str]:
    """Per setting and stage: the primary score's mean ± SE over images, SSIM, raw PSNR,
    seconds, and the stage minus the previous one (paired: ± SE, wins, verdict)."""
    p, s = primary(suite)
    found = {(c.setting, c.method): c for c in paired_summary(rows, suite, p)}
    head = ["setting", "stage", f"{LABELS[p]} ± SE", "hole SSIM" if p == "psnr_hole" else "SSIM"]
    head += ["raw PSNR", "s/img", "n", "− previous stage (± SE, wins)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stats = means(rows)
    for setting in ordered_settings(suite, rows):
        here = [m for m in ordered_methods(suite, rows) if (setting, m) in stats]
        for i, stage in enumerate(here):
            v = stats[setting, stage]
            se = standard_error(list(per_image(rows, setting, stage, p).values()))
            step = found.get((setting, stage))
            cells = [
                setting if i == 0 else "", stage, plus_minus(v[p], se), number(v[s]),
                number(v["psnr_raw"]),
                seconds_cell(v["seconds"]), str(v["images"]),
                f"{comparison_cell(step)} vs {step.other}" if step else MISSING,
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *verdicts(list(found.values()))]


def ablation_section(rows: dict[tuple[str, str], list[dict]]) -> list[str]:
    found = [(d, s) for d in SETS for s in SUITES if s.startswith(ABLATION) and (d, s) in rows]
    if not found:
        return []
    lines = [
        "", "## The paper's ablation (its Fig. 3)", "",
        "From the conventional coordinate MLP to the full Knitwork, one component added per "
        "stage on the preset's own budget (`knitwork/ablation.py`): mlp; patches (the "
        "multi-scale patch output, patch loss only); consistency (+ α); reconstructor (+ the "
        "reconstructor and β); guide (+ inpainting's pull towards the biharmonic fill, "
        "`loss.inpaint_guide`: ours, not the paper's); knitwork (+ the discriminator γ: the "
        "preset itself). A stage that changes nothing for the preset is left out, so with γ 0 "
        "the last row adds the guide. Each "
        "stage's difference from the previous one is paired over images; it counts as a gain "
        "or a loss only outside ± SE. The paper shows its ablation as a figure, so there are no "
        "published numbers to set beside these.",
    ]  # fmt: skip
    for dataset, suite in found:
        task = suite_task(suite)
        lines += ["", f"### {dataset}, {dict(TITLES)[task].split(' (')[0].lower()}", ""]
        lines += [protocol(dataset, rows[dataset, suite]), ""]
        lines += ablation_table(suite, rows[dataset, suite])
    return lines


def picture(out: Path, images: Path, target: Path, suite: str, rows: list[dict]) -> str | None:
    """input | knitwork | (dip) | mlp | best classical | truth for one image of repeat 0,
    enlarged ×3, plus a second row of crops around the hole (inpainting) or the centre;
    an earlier picture is linked when the restored images are gone."""
    dataset, setting, image = PICTURE[suite]
    name = f"quality-{suite}.png"
    link = os.path.relpath(images / name, target.parent)
    folder = out / f"{dataset}-{suite}" / setting
    key, first = primary(suite)[0], [r for r in rows if r.get("repeat", 0) == 0]
    stats = means(first)
    classical = [m for m in ordered_methods(suite, first) if m not in NETWORKS]
    if not classical or (setting, "knitwork") not in stats:
        return None
    best = max(classical, key=lambda m: stats.get((setting, m), {}).get(key) or -1e9)
    dip = ["dip"] if (folder / "dip" / image).is_file() else []
    shown = ["input", "knitwork", *dip, "mlp", best, "truth"]
    paths = [folder / m / image for m in shown]
    if not all(p.is_file() for p in paths):
        if (images / name).is_file():
            return f"![{dataset} {image} at {setting} (an earlier run's picture)]({link})"
        return None
    truth = load_image(paths[-1]).pixels
    h, w = truth.shape[:2]
    panels = [panel(p, (3 * w, 3 * h)) for p in paths]
    top, left, ch, cw = crop_box(first, suite, setting, image, h, w)
    crops = [resize(p[3 * top : 3 * (top + ch), 3 * left : 3 * (left + cw)], (3 * w, 3 * h))
             for p in panels]  # fmt: skip
    scores = {
        r["method"]: r[key]
        for r in first
        if r["setting"] == setting and r["image"] == image and r.get(key) is not None
    }
    names = [m if m not in scores else f"{m} {scores[m]:.1f} dB" for m in shown]
    save_image(images / name, contact_sheet(panels, names, crops, "crop"))
    return f"![{dataset} {image} at {setting}: {', '.join(shown)}; crops below]({link})"


def task_section(dataset: str, suite: str, found: list[dict] | None) -> list[str]:
    """One set's tables for a task suite: means, paired differences, the paper's numbers."""
    if not found:
        return [f"### {dataset}", "", "Not run yet.", ""]
    failed = sum(r["status"] != "ok" for r in found)
    p = primary(suite)[0]
    failed_rows = f" ({failed} failed row{'s' if failed > 1 else ''})" if failed else ""
    lines = [f"### {dataset}{failed_rows}", ""]
    lines += [protocol(dataset, found), ""]
    lines += [
        f"Means ({LABELS[p]} ± SE over images, an image's value its mean over repeats; "
        "**bold**: the setting's best; best on: the images where it scores highest; raw: the "
        "paper's protocol, the whole raw output, no known pixel pasted back):",
        "", *mean_table(suite, found), "",
    ]  # fmt: skip
    scores = [p] + (["psnr_raw"] if raw_differs(found) else [])
    for score in scores:
        lines += [
            f"Knitwork − each method, {LABELS[score]} (dB), paired over images: mean ± paired "
            "SE, images won k/n, and ahead or behind only outside ± SE:",
            "", *paired_table(dataset, suite, found, score), "",
        ]  # fmt: skip
    if not at_paper_size(suite, found):
        steps = get_preset(f"paper-{suite_task(suite)}").optim.steps
        lines += [
            "No gap to the paper's Knitwork is taken: these rows are not at the paper's full "
            f"size and {steps:,} steps (`paper-{suite}`), so its numbers stand apart below.",
            "",
        ]
    number = dict(TITLES)[suite].split("(")[1].rstrip(")")
    what = "hole and whole-image" if suite == "inpaint" else ""
    lines += [
        f"The paper's {what} PSNR/SSIM, full size (not like for like), from its {number}:".replace(
            "  ", " "
        ),
        "", *paper_table(dataset, suite), "",
    ]  # fmt: skip
    return lines


def write_report(
    data: Path,
    out: Path,
    target: Path,
    images: Path,
    command: Callable[..., list[str]],
    notes_from: Path | None = None,
) -> None:
    """Write ``target`` from the JSON rows under ``data`` (pictures from the restored images
    under ``out`` into ``images``), keeping the notes section of ``target`` (or, when it has
    none, of ``notes_from``)."""
    rows = load_rows(data)
    lines = intro(rows, command)
    for suite, title in TITLES:
        lines += ["", f"## {title}", ""]
        set5 = rows.get(("Set5", suite), [])
        shot = picture(out, images, target, suite, set5) if set5 else None
        lines += [shot, ""] if shot else []
        for dataset in SETS:
            lines += task_section(dataset, suite, rows.get((dataset, suite)))
    lines += ablation_section(rows)
    notes = NOTES_MARK + "\n"
    for source in (target, notes_from):
        old = source.read_text(encoding="utf-8") if source and source.exists() else ""
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK) :]
            break
    tidy = [x for i, x in enumerate(lines) if x or (i and lines[i - 1])]  # no double blanks
    publish(target, [*tidy, ""], notes)


def intro(rows: dict[tuple[str, str], list[dict]], command: Callable[..., list[str]]) -> list[str]:
    example = rows.get(("Set5", "inpaint"), [])
    sides = {r.get("max_side") for r in example} or {64}
    side = next(iter(sides)) if len(sides) == 1 else 64
    repeats = len({r.get("repeat", 0) for r in example}) or 3
    prefix = "paper" if example and at_paper_size("inpaint", example) else "fast"
    line = " ".join(command("Set5", "inpaint", side, prefix, repeats))
    return [
        "# Quality benchmark: our numbers, with their error, beside the paper's",
        "",
        "Commands: `python benchmarks/quality.py run` (by default Set5 and Set14; inpaint, "
        "denoise, sr; `--seeds 3`; the ablation suites on Set5; `--max-side 64`; `fast-*` "
        "presets), which runs `knitwork bench quality` for each set and suite and prints each "
        "line before it runs (`--methods dip` adds a method and merges its rows), then "
        "`python benchmarks/quality.py report` (this file and the pictures). The Set5 "
        f"inpainting rows here are those of `{line}`.  ",
        "Machines: every row ran on a 2-CPU session machine without a GPU, an Intel Xeon until "
        "2026-12-01 10:00 UTC and an AMD EPYC (with AVX-512 BF16, so `precision: auto` fits "
        "in bf16) after: the Set5 inpainting `knitwork` rows and the Set5 ablation's "
        "`knitwork` stage are the EPYC's; the seconds of the two are not comparable. This "
        f"file was written on: {describe()}.  ",
        'Rows: [docs/benchmarks/quality/](quality/) (`{"rows": [...]}` per set and suite, one '
        "row per method, setting, image and repeat, with its parameters and seconds; rows "
        "from before `--seeds` count as repeat 0).",
        "",
        "**Reading the tables.** Each set's protocol line says its size, its repeats and its "
        "networks' steps. Means are over images and repeats; ± SE is the standard error over "
        "images of the per-image means. The paired tables subtract per image (an image's "
        "value: its mean over the repeats both methods have): the mean difference ± its "
        "paired SE (std of the per-image differences / √n), the images won, and a verdict: "
        "*ahead* or *behind* only when the mean lies outside ± SE, else *within SE*; the "
        "generated lines under each table call a result a win only outside the error.",
        "",
        "Protocol (fixed, seeded, `pipeline/bench.py`): inpainting one square hole of 1 / 2 / "
        "4 / 8 / 16 % of the pixels at a seeded position fully inside the image, and free-form "
        "holes of 3 % (scratches, a text overlay); denoising white Gaussian noise σ 10 / 20 / "
        "40 (0–255), clipped; blind SR ×2 and ×4 from delta, round Gaussian (σ = r/2), diagonal "
        "Gaussian (σx 0.75·r, σy 0.3·r, 45°) and per-image random anisotropic Gaussian kernels. "
        "Seed per image = base seed 0 + CRC32 of its name, + r for repeat r, the same for every "
        "method. Metrics: RGB PSNR/SSIM, data range 1, no border crop (docs/metrics.md). Ours "
        "keep the known pixels (inpainting: the hole is scored alone as *hole*); *raw* is the "
        "paper's protocol, the whole raw network output with no known pixel pasted back (a "
        "classical tool's output as it is). `mlp` is the conventional coordinate MLP with the "
        "same encoding, steps and learning rate; `dip` is Deep Image Prior run here; the "
        "classical tools are named with their parameters in each JSON row.",
        "",
        "The paper's numbers (its Tables 1–3) are full-size GPU runs of 4,000 steps with an "
        "unstated protocol; they stand in their own tables, and a '− paper' gap is taken only "
        "for rows run at the paper's size and steps.",
    ]
