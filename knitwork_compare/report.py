"""The comparison as one self-contained HTML page: runs, differing params (highlighted), metrics
(best marked), metric-against-parameter plots, metric curves and image grids. Styles are inline
and pictures are ``data:`` URIs: the page opens offline, with no network and no CDN."""

from __future__ import annotations

import datetime
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2

from knitwork_compare.compare import (
    HISTORY_PREFIXES,
    Comparison,
    as_number,
    metric_direction,
    metric_varies,
    varying_numeric_params,
)
from knitwork_compare.report_media import curve_figures, image_grids
from knitwork_compare.report_plots import param_plot
from knitwork_compare.text import MISSING, arrow, best_rule, cut, format_value

REPORT_NAME = "report.html"
MAX_PARAM_PLOTS = 8  # parameters drawn against metrics
METRICS_PER_PLOT = 4  # metric panels per parameter
PARAM_CELL_WIDTH = 60  # characters of a param value shown in its cell (the full value on hover)
HEAD_NAME_WIDTH = 24  # characters of a run name shown under its #N in the table heads

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>knitwork compare: {{ runs|length }} runs</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
td.param { white-space: normal; max-width: 15em; overflow-wrap: anywhere; }
td.deviates { background: #fff1a8; } th.differs { background: #ffe27a; }
td.best { background: #c8f0c8; font-weight: bold; }
.muted { color: #777; } .small { font-size: 11px; font-weight: normal; }
code { background: #f3f3f3; padding: 0 3px; }
.grid-row { display: flex; gap: 10px; align-items: flex-start; margin: 6px 0; }
.grid-row figure { margin: 0; max-width: 520px; }
.grid-row img { height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
.grid-row figcaption { font-size: 12px; max-width: 360px; white-space: normal; }
.rowhead { width: 110px; font-weight: bold; word-break: break-all; }
img.plot { max-width: 100%; }
</style></head><body>
<h1>Comparison of {{ runs|length }} runs</h1>
<p>Tracking store <code>{{ source }}</code>; experiments: {{ experiments|join(", ") }}.
Generated {{ generated }}{% if command %} by <code>{{ command }}</code>{% endif %}.</p>
{% if notes %}<p class="muted">Left out to keep the page light: {{ notes|join("; ") }}.</p>
{% endif %}

<h2>Runs</h2>
<table><tr><th>#</th><th>run id</th><th>experiment</th><th>parent</th><th>name</th>
<th>status</th><th>started (UTC)</th></tr>
{% for r in legend %}<tr><td>#{{ r.number }}</td><td><code>{{ r.run_id }}</code></td>
<td>{{ r.experiment }}</td><td>{{ r.parent }}</td><td>{{ r.name }}</td><td>{{ r.status }}</td>
<td>{{ r.started }}</td></tr>
{% endfor %}</table>

<h2>Parameters that differ</h2>
<p>{{ differing|length }} differ; cells unlike the row's most common value are highlighted.
{{ identical|length }} identical parameters are folded below.</p>
<div class="scroll"><table><tr><th>parameter</th>
{% for h in heads %}<th title="{{ h.title }}">{{ h.label }}<br>
<span class="muted small">{{ h.name }}</span></th>{% endfor %}</tr>
{% for row in differing %}<tr><th class="differs">{{ row.key }}</th>
{% for c in row.cells %}<td class="param{{ ' deviates' if c.deviates }}" title="{{ c.full }}">
{{ c.text }}</td>{% endfor %}
</tr>{% endfor %}</table></div>
<details><summary>{{ identical|length }} identical parameters</summary><table>
{% for key, value in identical %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>{% endfor %}
</table></details>

<h2>Metrics</h2>
<p>★ marks the best value of a row. {{ rule }}</p>
<div class="scroll"><table><tr><th>metric</th>
{% for h in heads %}<th title="{{ h.title }}">{{ h.label }}<br>
<span class="muted small">{{ h.name }}</span></th>{% endfor %}</tr>
{% for row in metrics %}<tr><th>{{ row.key }} {{ row.arrow }}</th>
{% for c in row.cells %}<td class="num{{ ' best' if c.best }}">{{ c.text }}</td>{% endfor %}
</tr>{% endfor %}</table></div>
{% if constant %}<details><summary>{{ constant|length }} metrics with one value on every run
</summary><table>{% for key, value in constant %}<tr><th>{{ key }}</th><td class="num">{{ value }}
</td></tr>{% endfor %}</table></details>{% endif %}

<h2>Metrics against parameters</h2>
{% for param, uri in param_plots %}<h3>{{ param }}</h3>
<img class="plot" alt="metrics against {{ param }}" src="{{ uri }}">
{% else %}<p class="muted">No numeric parameter varies among runs of the same image.</p>{% endfor %}

<h2>Curves</h2>
{% for metric, uri in curves %}<img class="plot" alt="{{ metric }} by step" src="{{ uri }}">
{% else %}<p class="muted">No metric was logged at more than one step.</p>{% endfor %}

<h2>Images</h2>
{% for grid in grids %}<h3>{{ grid.artifact }}</h3>
{% for image, cells in grid.rows %}<div class="grid-row"><div class="rowhead">{{ image }}</div>
{% for c in cells %}<figure>{% if c.uri %}<img alt="{{ grid.artifact }} of {{ c.caption }}"
src="{{ c.uri }}">{% endif %}<figcaption>{{ c.caption }}</figcaption></figure>{% endfor %}
</div>{% endfor %}
{% else %}<p class="muted">No image artifact is shared by two or more runs.</p>{% endfor %}
</body></html>
"""


def _started(milliseconds: int) -> str:
    if not milliseconds:
        return MISSING
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _tables(comparison: Comparison) -> dict[str, Any]:
    """Rows of the runs, params and metrics tables, as plain values for the template."""
    runs = comparison.runs
    number = {r.run_id: comparison.number(r) for r in runs}
    legend = [
        dict(number=number[r.run_id], run_id=r.run_id, experiment=r.experiment, name=r.name,
             parent=f"#{number[r.parent_id]}" if r.parent_id in number else MISSING,
             status=r.status, started=_started(r.start_time))
        for r in runs
    ]  # fmt: skip
    differing = []
    for key in comparison.differing:
        values = [r.fields().get(key, MISSING) for r in runs]
        common = Counter(values).most_common(1)[0][0]
        cells = [
            dict(text=cut(v, PARAM_CELL_WIDTH, middle=True), full=v, deviates=v != common)
            for v in values
        ]
        differing.append(dict(key=key, cells=cells))
    metrics, constant = [], []
    for key in comparison.metrics:
        if not metric_varies(runs, key):
            constant.append(
                (key, format_value(next(r.metrics[key] for r in runs if key in r.metrics)))
            )
            continue
        best = comparison.best.get(key, set())
        cells = [
            dict(text=format_value(r.metrics.get(key)) + (" ★" if r.run_id in best else ""),
                 best=r.run_id in best)
            for r in runs
        ]  # fmt: skip
        metrics.append(dict(key=key, arrow=arrow(key), cells=cells))
    heads = [
        dict(
            label=f"#{number[r.run_id]}",
            name=cut(r.name, HEAD_NAME_WIDTH, middle=True),
            title=r.run_id,
        )
        for r in runs
    ]
    return dict(legend=legend, differing=differing, metrics=metrics, constant=constant,
                heads=heads, identical=sorted(comparison.identical.items()))  # fmt: skip


def _plot_metrics(comparison: Comparison, param: str) -> list[str]:
    """Ranked end-of-run metrics that two or more runs with a numeric ``param`` have, the
    most widely logged first, higher-is-better before lower-is-better."""
    counts: Counter[str] = Counter()
    for run in comparison.runs:
        if as_number(run.params.get(param)) is None:
            continue
        for key in run.metrics:
            if metric_direction(key) and not key.startswith(HISTORY_PREFIXES):
                counts[key] += 1
    keys = [k for k, n in counts.items() if n > 1]
    keys.sort(key=lambda k: (-counts[k], metric_direction(k) != "max", k))
    return keys[:METRICS_PER_PLOT]


def param_figures(comparison: Comparison, notes: list[str]) -> list[tuple[str, str]]:
    """(param, PNG data URI) for each numeric param that varies among runs of one image."""
    params = varying_numeric_params(comparison)
    if len(params) > MAX_PARAM_PLOTS:
        notes.append(f"metric-against-parameter plots: {MAX_PARAM_PLOTS} of {len(params)} drawn")
    figures = []
    for param in params[:MAX_PARAM_PLOTS]:
        metrics = _plot_metrics(comparison, param)
        if metrics:
            figures.append((param, param_plot(comparison, param, metrics)))
    return figures


def render_report(comparison: Comparison, sections: dict[str, Any], command: str = "") -> str:
    """The page's HTML from the comparison and its pictures (``sections``: param_plots,
    curves, grids, notes)."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return environment.from_string(TEMPLATE).render(
        runs=comparison.runs,
        source=comparison.source,
        experiments=sorted({r.experiment for r in comparison.runs}),
        generated=generated,
        command=command,
        rule=best_rule(),
        **_tables(comparison),
        **sections,
    )


def write_report(
    client: Any, comparison: Comparison, folder: str | Path, command: str = ""
) -> tuple[Path, list[str]]:
    """Draw everything, write ``folder/report.html``; return its path and what was left out."""
    notes: list[str] = []
    sections = dict(
        param_plots=param_figures(comparison, notes),
        curves=curve_figures(client, comparison, notes),
        grids=image_grids(client, comparison, notes),
        notes=notes,
    )
    html = render_report(comparison, sections, command)
    path = Path(folder) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{REPORT_NAME}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    return path, notes
