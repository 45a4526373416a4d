"""A batch's summary: its records, the counts and means recorded in MLflow, and the table the
command prints."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from knitwork.report import SCORES
from pipeline.manifest import Record

NAME_WIDTH = 30  # characters of an image name in the summary table


@dataclass(kw_only=True)
class BatchSummary:
    records: list[Record] = field(default_factory=list)  # this run's records, input order
    parent_run_id: str | None = None
    tracked: bool = False
    seconds: float = 0.0
    recorded_late: int = 0  # finished images recorded in MLflow now, an earlier run could not

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0


def aggregate(summary: BatchSummary) -> dict[str, float]:
    """Batch-level metrics: counts, throughput, and means of the per-image scores."""
    ran = [r for r in summary.records if r.status != "skipped"]
    out: dict[str, float] = {k: float(summary.count(k)) for k in ("ok", "failed", "skipped")}
    if ran and summary.seconds > 0:
        out["images_per_minute"] = len(ran) / (summary.seconds / 60)
    for key in (*SCORES, "seconds"):
        values = [
            r.metrics[key]
            for r in summary.records
            if r.status in ("ok", "skipped") and r.metrics.get(key) is not None
        ]
        if values:
            out[f"mean_{key}"] = statistics.fmean(values)
    return out


def summary_table(summary: BatchSummary) -> str:
    """A plain-text table: one row per image, then the totals."""
    header = f"{'image':{NAME_WIDTH}s} {'status':8s} {'psnr':>7s} {'hole':>7s} {'seconds':>8s}"
    rows = [header + "  error"]
    for r in summary.records:
        psnr, hole = r.metrics.get("psnr"), r.metrics.get("psnr_hole")
        rows.append(
            f"{r.input[:NAME_WIDTH]:{NAME_WIDTH}s} {r.status:8s} {_num(psnr):>7s} {_num(hole):>7s} "
            f"{r.seconds:8.1f}  {(r.error or '').splitlines()[0] if r.error else ''}"
        )
    means = aggregate(summary)
    rows.append(
        f"{summary.count('ok')} ok, {summary.count('failed')} failed, "
        f"{summary.count('skipped')} skipped in {summary.seconds:.1f} s"
        + (f"; mean PSNR {means['mean_psnr']:.2f} dB" if "mean_psnr" in means else "")
    )
    return "\n".join(rows)


def _num(value) -> str:
    return "–" if value is None else f"{value:.2f}"
