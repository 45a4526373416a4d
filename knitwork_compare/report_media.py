"""What the comparison report draws, read from the tracking store: metric curves (MLflow metric
histories) and image grids (the same image artifact across runs). Every cap on what is drawn
is reported as a note, so the page says what it left out."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knitwork_compare.compare import HISTORY_PREFIXES, Comparison, RunRecord
from knitwork_compare.report_plots import NO_GROUP, curve_plot, thumbnail
from knitwork_compare.text import cut

MAX_CURVE_RUNS = 12  # lines per curve figure
MAX_CURVES = 12  # curve figures
MAX_GRIDS = 4  # image artifact names shown
MAX_GRID_ROWS = 12  # images (tag ``image``) per grid
MAX_GRID_COLUMNS = 8  # runs per grid row
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ARTIFACT_DEPTH = 2  # how deep into artifact folders to look for images
CAPTION_WIDTH = 80  # characters of an image's caption


@dataclass(kw_only=True)
class Cell:
    caption: str
    uri: str = ""  # data: URI, empty when the artifact could not be read
    width: int = 0
    height: int = 0


@dataclass(kw_only=True)
class Grid:
    artifact: str  # the artifact path, e.g. side_by_side.png
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)  # (image, cells)


def _history_keys(comparison: Comparison) -> list[str]:
    """``loss/*`` and ``train/*`` first, then every other metric (those logged once are
    dropped after their history is read)."""
    keys = comparison.metrics
    return [k for k in keys if k.startswith(HISTORY_PREFIXES)] + [
        k for k in keys if not k.startswith(HISTORY_PREFIXES)
    ]


def curve_figures(client: Any, comparison: Comparison, notes: list[str]) -> list[tuple[str, str]]:
    """(metric, PNG data URI) for each metric some run logged at two or more steps."""
    figures: list[tuple[str, str]] = []
    for key in _history_keys(comparison):
        runs = [r for r in comparison.runs if key in r.metrics]
        series = []
        for run in runs[:MAX_CURVE_RUNS]:
            points = sorted(
                (m.step, m.timestamp, m.value) for m in client.get_metric_history(run.run_id, key)
            )
            if len({p[0] for p in points}) > 1:
                series.append(
                    (comparison.label(run), [p[0] for p in points], [p[2] for p in points])
                )
        if not series:
            continue
        if len(figures) == MAX_CURVES:
            notes.append(f"only the first {MAX_CURVES} metrics with a history are drawn as curves")
            break
        if len(runs) > MAX_CURVE_RUNS:
            notes.append(f"curve {key}: the first {MAX_CURVE_RUNS} of {len(runs)} runs drawn")
        figures.append((key, curve_plot(key, series)))
    return figures


def _image_paths(client: Any, run_id: str, path: str | None = None, depth: int = 0) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir and depth < ARTIFACT_DEPTH:
            found += _image_paths(client, run_id, item.path, depth + 1)
        elif not item.is_dir and item.path.lower().endswith(IMAGE_SUFFIXES):
            found.append(item.path)
    return found


def _caption(comparison: Comparison, run: RunRecord, row: list[RunRecord]) -> str:
    """The run's number, then the differing fields that change along this row."""
    shown = []
    for key in comparison.differing:
        values = {r.fields().get(key) for r in row}
        if len(values) > 1 and key not in ("image", "tag:image"):
            shown.append(f"{key}={run.fields().get(key, '–')}")
    return cut(f"#{comparison.number(run)} " + (" ".join(shown) or run.name), CAPTION_WIDTH)


def _cell(client: Any, comparison: Comparison, run: RunRecord, path: str, row, folder) -> Cell:
    caption = _caption(comparison, run, row)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        local = client.download_artifacts(run.run_id, path, dst_path=str(folder))
        uri, width, height = thumbnail(Path(local).read_bytes())
    except Exception as err:  # a missing or unreadable artifact costs one cell, not the report
        return Cell(caption=f"{caption} (unreadable: {type(err).__name__})")
    return Cell(caption=caption, uri=uri, width=width, height=height)


def image_grids(client: Any, comparison: Comparison, notes: list[str]) -> list[Grid]:
    """For each image artifact that two or more runs have: one row per image (tag ``image``),
    that artifact of every run along the row."""
    holders: dict[str, list[RunRecord]] = {}
    for run in comparison.runs:
        for path in _image_paths(client, run.run_id):
            holders.setdefault(path, []).append(run)
    common = Counter({path: len(runs) for path, runs in holders.items() if len(runs) > 1})
    chosen = sorted(common, key=lambda p: (-common[p], p))
    if len(chosen) > MAX_GRIDS:
        notes.append(f"image grids: {MAX_GRIDS} of {len(chosen)} shared images shown")
    grids = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, path in enumerate(chosen[:MAX_GRIDS]):
            grids.append(
                _grid(client, comparison, path, holders[path], Path(tmp) / str(index), notes)
            )
    return grids


def _grid(client: Any, comparison: Comparison, path: str, runs, folder: Path, notes) -> Grid:
    rows: dict[str, list[RunRecord]] = {}
    for run in runs:
        rows.setdefault(run.group or NO_GROUP, []).append(run)
    if len(rows) > MAX_GRID_ROWS:
        notes.append(f"{path}: the first {MAX_GRID_ROWS} of {len(rows)} images shown")
    grid = Grid(artifact=path)
    for number, (group, row) in enumerate(sorted(rows.items())[:MAX_GRID_ROWS]):
        if len(row) > MAX_GRID_COLUMNS:
            notes.append(f"{path}, {group}: the first {MAX_GRID_COLUMNS} of {len(row)} runs shown")
        row = row[:MAX_GRID_COLUMNS]
        place = folder / str(number)
        grid.rows.append(
            (group, [_cell(client, comparison, r, path, row, place / r.run_id) for r in row])
        )
    return grid
