"""Helpers for the batch restoration tests (test_restore.py, test_restore_failures.py):
restore options with flat degradation and cluster fields, the manifest, a batch's MLflow runs."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from knitwork.degradation import Degradation
from knitwork.presets import get_preset
from pipeline.cluster import ClusterOptions
from pipeline.driver import RestoreOptions
from pipeline.manifest import MANIFEST_NAME
from pipeline.storage import open_storage
from tests.conftest import shrink

DEGRADATION_FIELDS = ("task", "fill_ratio", "sigma", "scale", "kernel", "degrade_kernel")
CLUSTER_FIELDS = (
    "cpus_per_task", "gpus_per_task", "max_in_flight", "max_retries", "address", "pack"
)  # fmt: skip


def options(source, target, steps=3, **changes) -> RestoreOptions:
    """Restore options for a test; degradation and cluster fields may be given flat."""
    degradation = {"task": "inpaint", "fill_ratio": 0.02}
    degradation |= {k: changes.pop(k) for k in DEGRADATION_FIELDS if k in changes}
    cluster = {k: changes.pop(k) for k in CLUSTER_FIELDS if k in changes}
    task = degradation["task"]
    base = dict(
        input=str(source),
        output=str(target),
        config=shrink(get_preset(f"fast-{task}"), steps=steps),
        degradation=Degradation(**degradation),
        cluster=ClusterOptions(**cluster),
        preset=f"fast-{task}",
        synthetic=True,
        progress=False,
        experiment="tests",
    )
    return RestoreOptions(**(base | changes))


def manifest(target) -> list[dict]:
    text = open_storage(str(target)).read(MANIFEST_NAME).decode()
    return [json.loads(line) for line in text.splitlines()]


def child_runs(uri: str, parent: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    return client, runs
