"""The pipeline's batch steps: restoration with the run's preset file (in this pod, joined to a
running Ray cluster, or as a RayJob), then its summary and the comparison report.

A batch summary is a plain dict (a KFP parameter): ``ok``, ``failed``, ``skipped``,
``seconds``, ``images_per_hour``, ``mean_*`` scores, ``mlflow_run_ids`` (the batch's parent
run first) and ``output_uri``.
"""

from __future__ import annotations

import math
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from knitwork.degradation import Degradation
from pipeline.cluster import ClusterOptions
from pipeline.driver import RestoreOptions, restore
from pipeline.kubeflow.rayjob import run_rayjob
from pipeline.kubeflow.steps import (
    LOCAL_PRESET,
    Settings,
    load_preset,
    restore_argv,
    run_cli,
)
from pipeline.manifest import Manifest
from pipeline.storage import open_storage
from pipeline.summary import BatchSummary, aggregate

STATUSES = ("ok", "failed", "skipped")
SOME_FAILED = 1  # `knitwork restore`'s exit code when images failed (they are in the manifest)


def restore_on_cluster(job: dict[str, Any], s: Settings) -> dict[str, Any]:
    """``pipeline.driver.restore`` in this process, joined to ``s.ray_address``."""
    cluster = ClusterOptions(
        address=s.ray_address, cpus_per_task=s.cpus_per_task, gpus_per_task=s.gpus_per_task
    )
    options = RestoreOptions(
        input=job["input_uri"], output=job["output_uri"],
        config=load_preset(job["preset_uri"], s.s3_endpoint), preset=job["preset_uri"],
        degradation=Degradation(task=s.task), synthetic=bool(job.get("synthetic")),
        masks=job.get("masks_uri") or None, cluster=cluster, experiment=s.experiment or None,
        s3_endpoint_url=s.endpoint, progress=False,
    )  # fmt: skip
    return summary_of(restore(options), job["output_uri"])


def summary_of(summary: BatchSummary, output_uri: str) -> dict[str, Any]:
    values = aggregate(summary)
    out: dict[str, Any] = {k: int(values.get(k, 0)) for k in STATUSES}
    out |= {k: v for k, v in values.items() if k.startswith("mean_") and math.isfinite(v)}
    out["seconds"] = summary.seconds
    out["images_per_hour"] = values.get("images_per_minute", 0.0) * 60
    out["mlflow_run_ids"] = [summary.parent_run_id] if summary.parent_run_id else []
    out["output_uri"] = output_uri
    return out


def rayjob_entrypoint(job: dict[str, Any], s: Settings) -> str:
    """Fetch the preset file onto the head, then restore; exit 1 (some images failed, as the
    manifest records) counts as done, any other failure fails the RayJob."""
    fetch = ["python", "-m", "pipeline.kubeflow", "fetch", job["preset_uri"], LOCAL_PRESET]
    restore_cmd = shlex.join(["knitwork", *restore_argv(job, s)])
    return f"{shlex.join(fetch)} && {{ {restore_cmd} || [ $? -eq {SOME_FAILED} ]; }}"


def restore_as_rayjob(job: dict[str, Any], s: Settings) -> dict[str, Any]:
    """The batch as a RayJob of its own; the summary read back from OUTPUT's manifest."""
    start = time.perf_counter()
    run_rayjob(s.rayjob(rayjob_entrypoint(job, s), "knitwork-restore-"))
    return summary_from_manifest(job["output_uri"], s, time.perf_counter() - start)


def summary_from_manifest(output_uri: str, s: Settings, seconds: float) -> dict[str, Any]:
    """Counts from OUTPUT/_manifest.jsonl (every image ever run into OUTPUT) and the MLflow
    batch runs its records belong to."""
    records = list(Manifest(open_storage(output_uri, s.endpoint)).records.values())
    out: dict[str, Any] = {k: sum(r.status == k for r in records) for k in STATUSES}
    out["seconds"] = seconds
    out["images_per_hour"] = (out["ok"] + out["failed"]) / (seconds / 3600) if seconds else 0.0
    out["mlflow_run_ids"] = parent_runs([r.mlflow_run_id for r in records if r.mlflow_run_id])
    out["output_uri"] = output_uri
    return out


def parent_runs(child_ids: list[str]) -> list[str]:
    """The MLflow parent (batch) runs of these image runs, first seen first."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client, parents = MlflowClient(), []
    for run_id in dict.fromkeys(child_ids):
        try:
            parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        except MlflowException:
            continue
        if parent and parent not in parents:
            parents.append(parent)
    return parents


def restore_batch(job: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Restore ``job`` (input_uri, output_uri, preset_uri, masks_uri, synthetic)."""
    if s.ray_mode == "rayjob":
        return restore_as_rayjob(job, s)
    return restore_on_cluster(job, s)


def summary_metrics(summary: dict[str, Any], images: int) -> dict[str, float]:
    """The numbers of a batch summary, as KFP metrics."""
    numbers = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
    return {"images_found": float(images)} | numbers


def write_report(summary: dict[str, Any], experiment: str, path: str) -> str:
    """``knitwork compare`` on the batch's MLflow runs (else the experiment) into ``path``, a
    self-contained HTML file; returns what was compared."""
    targets = list(summary.get("mlflow_run_ids") or []) or [experiment]
    with tempfile.TemporaryDirectory() as folder:
        run_cli(["compare", *targets, "--output", folder])
        Path(path).write_bytes((Path(folder) / "report.html").read_bytes())
    return " ".join(targets)
