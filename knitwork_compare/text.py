"""The comparison as plain text for a terminal: a legend of runs, then params and metrics with
runs as columns (in blocks that fit the width), long values cut with '…'."""

from __future__ import annotations

from collections.abc import Callable

from knitwork_compare.compare import Comparison, RunRecord, metric_direction, metric_varies

MISSING = "–"
BEST = "*"
WIDTH = 110  # default width of the whole table, in characters
NUMBER_WIDTH = 3  # the legend's run number column (#)
RUN_ID_WIDTH = 32  # the legend's run id column: an MLflow run id is 32 hex digits
EXPERIMENT_WIDTH = 18  # the legend's experiment column, at most (longer names are cut)
PARENT_WIDTH = 6  # the legend's parent column (#N)
MIN_NAME_WIDTH = 12  # the legend's name column, at least, however narrow the table
KEY_WIDTH = 30  # the param/metric name column of the side-by-side tables, at most
COLUMN_WIDTH = 14  # one run's column in the side-by-side tables
MIN_MIDDLE_CUT = 8  # narrower than this, a value is cut at its end even with ``middle``


def cut(text: str, width: int, middle: bool = False) -> str:
    """``text`` on one line, at most ``width`` characters; '…' marks the cut, at the end or,
    with ``middle``, inside (paths and names differ at their ends)."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    if not middle or width < MIN_MIDDLE_CUT:
        return text[: max(0, width - 1)] + "…"
    head = (width - 1) // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def format_value(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def legend(comparison: Comparison, width: int) -> list[str]:
    """One line per run: number, full run id, experiment, parent, name."""
    number = {run.run_id: comparison.number(run) for run in comparison.runs}
    longest = max(len("experiment"), *(len(r.experiment) for r in comparison.runs))
    exp_width = min(EXPERIMENT_WIDTH, longest)
    head = (
        f"{'#':>{NUMBER_WIDTH}}  {'run id':{RUN_ID_WIDTH}}  {'experiment':{exp_width}}  "
        f"{'parent':{PARENT_WIDTH}}  name"
    )
    lines = [head]
    for i, run in enumerate(comparison.runs, 1):
        parent = f"#{number[run.parent_id]}" if run.parent_id in number else MISSING
        prefix = f"{i:>{NUMBER_WIDTH}}  {run.run_id:{RUN_ID_WIDTH}}  "
        prefix += f"{cut(run.experiment, exp_width):{exp_width}}  {parent:{PARENT_WIDTH}}  "
        lines.append(prefix + cut(run.name, max(MIN_NAME_WIDTH, width - len(prefix))))
    return lines


def _blocks(runs: list[RunRecord], key_width: int, col_width: int, width: int):
    per_block = max(1, (width - key_width) // (col_width + 2))
    for start in range(0, len(runs), per_block):
        yield start, runs[start : start + per_block]


def side_by_side(
    comparison: Comparison,
    rows: dict[str, str],
    cell: Callable[[RunRecord, str], str],
    width: int,
    col_width: int = COLUMN_WIDTH,
) -> list[str]:
    """One line per key of ``rows`` (shown as its value), a column per run, in blocks of
    columns that fit ``width``."""
    if not rows:
        return []
    key_width = min(KEY_WIDTH, max(len(label) for label in rows.values()))
    lines: list[str] = []
    for start, block in _blocks(comparison.runs, key_width, col_width, width):
        numbers = [f"#{start + i}" for i in range(1, len(block) + 1)]
        heads = [
            f"{n} {cut(run.name, col_width - len(n) - 1, middle=True)}"
            for n, run in zip(numbers, block, strict=True)
        ]
        if lines:
            lines.append("")
        lines.append((" " * key_width + "".join(f"  {h:<{col_width}}" for h in heads)).rstrip())
        for key, label in rows.items():
            cells = "".join(
                f"  {cut(cell(run, key), col_width, middle=True):<{col_width}}" for run in block
            )
            lines.append(f"{cut(label, key_width):<{key_width}}{cells}".rstrip())
    return lines


def format_comparison(comparison: Comparison, width: int = WIDTH) -> str:
    """The legend, the differing params and the metrics (best marked ``*``) as text."""
    runs = comparison.runs
    experiments = sorted({r.experiment for r in runs})
    out = [f"{len(runs)} runs from {comparison.source} (experiments: {', '.join(experiments)})"]
    out += ["", *legend(comparison, width)]
    hidden = len(comparison.identical)
    out += ["", f"params that differ ({len(comparison.differing)}; {hidden} identical hidden):"]

    def param(run: RunRecord, key: str) -> str:
        return run.fields().get(key, MISSING)

    rows = {key: key for key in comparison.differing}
    out += side_by_side(comparison, rows, param, width) or ["  (none)"]

    def metric(run: RunRecord, key: str) -> str:
        text = format_value(run.metrics.get(key))
        return text + BEST if run.run_id in comparison.best.get(key, ()) else text

    shown = [key for key in comparison.metrics if metric_varies(runs, key)]
    rows = {key: f"{key} {arrow(key)}".rstrip() for key in shown}
    same = len(comparison.metrics) - len(shown)
    out += [
        "",
        f"metrics ({BEST} best, ↑ higher is better, ↓ lower is better; {same} identical hidden):",
    ]
    out += side_by_side(comparison, rows, metric, width) or ["  (none)"]
    out += ["", best_rule()]
    return "\n".join(out)


def arrow(metric: str) -> str:
    return {"max": "↑", "min": "↓", None: ""}[metric_direction(metric)]


def best_rule() -> str:
    return (
        "Best: highest for psnr/ssim/accuracy/score/throughput-like names, lowest for "
        "loss/seconds/time/error-like names, unmarked otherwise and for reference_* metrics; "
        "runs tagged with an image compete only with runs of the same image."
    )
