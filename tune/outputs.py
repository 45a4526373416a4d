"""What a finished search leaves behind: a row per trial, the best config as a preset file,
trials.csv, objective.png and a short table for the terminal."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from knitwork.config import Config
from knitwork.presets import to_yaml
from pipeline.tracking import ERROR_LENGTH
from tune.space import Param, apply_params

CSV_NAME = "trials.csv"
PLOT_NAME = "objective.png"


def best_name(task: str) -> str:
    return f"best-{task}.yaml"


@dataclass(kw_only=True)
class TrialRow:
    trial_id: str
    status: str  # completed, stopped (early, by ASHA), diverged or error
    objective: float | None  # the last reported objective (dB)
    steps_done: int
    steps: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)  # the trial's values, by dotted field
    error: str = ""


def trial_row(result) -> TrialRow:
    """A row from one Ray Tune ``Result``."""
    m = result.metrics or {}
    steps, done = int(m.get("steps", 0)), int(m.get("step", 0))
    if result.error is not None:
        status = "error"
    elif m.get("diverged"):
        status = "diverged"
    elif m.get("finished"):
        status = "completed"
    else:
        status = "stopped"
    objective = m.get("objective")
    error = str(result.error).strip().splitlines()[-1][:ERROR_LENGTH] if result.error else ""
    return TrialRow(
        trial_id=str(m.get("trial_id", "")),
        status=status,
        objective=float(objective) if isinstance(objective, int | float) else None,
        steps_done=done,
        steps=steps,
        seconds=float(m.get("time_total_s", 0.0)),
        params=dict(result.config or {}),
        error=error,
    )


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The highest objective among completed trials (any scored trial if none completed)."""
    scored = [r for r in rows if r.objective is not None and r.status != "error"]
    done = [r for r in scored if r.status == "completed"] or scored
    return max(done, key=lambda r: r.objective) if done else None


def best_preset(base: Config, row: TrialRow, search: str, label: str) -> bytes:
    """The best config as a full preset file, with a comment saying where it comes from."""
    config = apply_params(base, row.params)
    header = (
        f"# knitwork tune: best trial {row.trial_id} of search {search!r}, {label} "
        f"{row.objective:.3f} after {row.steps_done} steps.\n"
        "# Use it with: knitwork fit|restore ... --preset-file THIS_FILE\n"
    )
    return (header + to_yaml(config)).encode("utf-8")


def trials_csv(rows: list[TrialRow], params: list[Param]) -> bytes:
    """One line per trial: id, status, objective, steps, seconds, every param, error."""
    keys = [p.key for p in params]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial_id", "status", "objective", "steps_done", "steps", "seconds", *keys])
    for r in rows:
        objective = "" if r.objective is None else f"{r.objective:.4f}"
        values = [r.params.get(k, "") for k in keys]
        writer.writerow(
            [r.trial_id, r.status, objective, r.steps_done, r.steps, f"{r.seconds:.1f}", *values]
        )
    return buffer.getvalue().encode("utf-8")


_COLOURS = {"completed": "tab:blue", "stopped": "tab:orange", "diverged": "tab:red"}


def objective_plot(rows: list[TrialRow], params: list[Param], label: str) -> bytes:
    """PNG: one panel per searched param, the objective against its value (log x for
    log-uniform params), colour by status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    searched = [p for p in params if p.searched] or params[:1]
    cols = min(3, max(1, len(searched)))
    nrows = math.ceil(len(searched) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(searched) :]:
        ax.set_visible(False)
    for ax, param in zip(axes.flat, searched, strict=False):
        _panel(ax, param, rows, label)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=c, label=s) for s, c in _COLOURS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def _panel(ax, param: Param, rows: list[TrialRow], label: str) -> None:
    scored = [r for r in rows if r.objective is not None and param.key in r.params]
    values = [r.params[param.key] for r in scored]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numeric:  # choices such as patch scales: one column per option
        options = sorted({str(v) for v in values})
        values = [options.index(str(v)) for v in values]
        ax.set_xticks(range(len(options)), options)
    colours = [_COLOURS.get(r.status, "grey") for r in scored]
    ax.scatter(values, [r.objective for r in scored], c=colours, s=28)
    if param.log and numeric:
        ax.set_xscale("log")
    ax.set_xlabel(param.key)
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)


def summary_table(rows: list[TrialRow], params: list[Param], limit: int = 10) -> str:
    """The best ``limit`` trials, best first, and the counts by status."""
    keys = [p.key for p in params if p.searched]
    widths = [max(len(k), 9) for k in keys]
    idw = max([5, *(len(r.trial_id) for r in rows)])
    head = f"{'trial':{idw}s} {'status':9s} {'objective':>9s} {'steps':>9s}"
    lines = [head + "".join(f"  {k:>{w}s}" for k, w in zip(keys, widths, strict=True))]
    ranked = sorted(rows, key=lambda r: -math.inf if r.objective is None else r.objective)
    for r in reversed(ranked[-limit:]):
        objective = "–" if r.objective is None else f"{r.objective:.2f}"
        line = f"{r.trial_id:{idw}s} {r.status:9s} {objective:>9s} {r.steps_done:>4d}/{r.steps:<4d}"
        values = (_short(r.params.get(k, "")) for k in keys)
        lines.append(line + "".join(f"  {v:>{w}s}" for v, w in zip(values, widths, strict=True)))
    counts = {s: sum(r.status == s for r in rows) for s in [*_COLOURS, "error"]}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(rows)} trials")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
