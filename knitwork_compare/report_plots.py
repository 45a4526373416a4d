"""Pictures for the comparison report, each returned as a PNG ``data:`` URI so that the page
stands alone: metric-against-parameter plots, metric curves over steps, image thumbnails.

Matplotlib's object API (``Figure``, no pyplot): no display, no global state, Agg rendering.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from matplotlib.figure import Figure
from PIL import Image

from knitwork_compare.compare import Comparison, as_number, metric_direction

DPI = 80
THUMBNAIL_SIDE = 256  # height limit of an embedded image, in pixels (width: twice)
PLOT_COLOURS = 64  # palette size of a plot's PNG
PANEL_SIZE = (3.6, 3.0)  # inches (width, height) of one metric panel of a param plot
CURVE_SIZE = (6.4, 3.2)  # inches (width, height) of a curve figure
SMALL_FONT = 7  # points: point labels and legends
LOG_SCALE_RATIO = 30  # a positive curve spanning more than this factor is drawn on a log axis
LEGEND_ONE_COLUMN = 6  # curves a one-column legend holds; more get two columns
NO_GROUP = "(no image tag)"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_uri(figure: Figure) -> str:
    """The figure as a PNG data URI, reduced to a ``PLOT_COLOURS`` palette (a quarter of the
    bytes)."""
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=DPI, bbox_inches="tight")
    rendered.seek(0)
    with Image.open(rendered) as image:
        palette = image.convert("RGB").quantize(colors=PLOT_COLOURS)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def _title(metric: str) -> str:
    return (
        metric
        + {"max": "  (higher is better)", "min": "  (lower is better)", None: ""}[
            metric_direction(metric)
        ]
    )


def param_plot(comparison: Comparison, param: str, metrics: Sequence[str]) -> str:
    """One panel per metric: the metric of each run against the run's value of ``param``,
    one colour per image (tag ``image``), points of one image joined in order of the param."""
    width, height = PANEL_SIZE
    figure = Figure(figsize=(width * len(metrics), height), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        groups: dict[str, list[tuple[float, float, int]]] = {}
        for run in comparison.runs:
            x, y = as_number(run.params.get(param)), run.metrics.get(metric)
            if x is not None and y is not None:
                point = (x, y, comparison.number(run))
                groups.setdefault(run.group or NO_GROUP, []).append(point)
        for group, points in sorted(groups.items()):
            points.sort()
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, marker="o", linewidth=1, label=group)
            for x, y, number in points:
                ax.annotate(
                    f"#{number}",
                    (x, y),
                    fontsize=SMALL_FONT,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.margins(x=0.12, y=0.1)
        ax.set_xlabel(param)
        ax.set_title(_title(metric), fontsize=9)
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=SMALL_FONT)
    return figure_uri(figure)


def curve_plot(metric: str, series: Sequence[tuple[str, list[int], list[float]]]) -> str:
    """``metric`` against step, one line per run: ``series`` holds (label, steps, values)."""
    figure = Figure(figsize=CURVE_SIZE, layout="constrained")
    ax = figure.subplots()
    for label, steps, values in series:
        ax.plot(steps, values, linewidth=1.2, label=label)
    ax.set_xlabel("step")
    ax.set_title(_title(metric), fontsize=10)
    ax.grid(alpha=0.3)
    values = [v for _, _, vs in series for v in vs]
    if min(values) > 0 and max(values) / min(values) > LOG_SCALE_RATIO:  # falling by decades
        ax.set_yscale("log")
    ax.legend(fontsize=SMALL_FONT, ncols=2 if len(series) > LEGEND_ONE_COLUMN else 1)
    return figure_uri(figure)


def thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> tuple[str, int, int]:
    """An image file's bytes as a PNG data URI at most ``side`` pixels high and twice that
    wide (side-by-side pictures are wide), with its width and height."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        picture = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    picture.thumbnail((2 * side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue()), picture.width, picture.height
