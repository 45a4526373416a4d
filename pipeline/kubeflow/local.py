"""``python -m pipeline.kubeflow run``: the whole pipeline on this machine with ``kfp.local``
(every step a subprocess of this Python, no Kubernetes, no KFP server), against the services
the environment names: a Ray cluster (``RAY_ADDRESS``, e.g. from `knitwork stack up`), an MLflow
tracking server (``MLFLOW_TRACKING_URI``) and S3 (``AWS_ENDPOINT_URL`` and the AWS keys). The
steps' records (logs, artifacts such as the HTML report) go under ``--root``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_ROOT = "out/kubeflow-local"


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline here with kfp.local, against RAY_ADDRESS, "
        "MLFLOW_TRACKING_URI and AWS_ENDPOINT_URL (e.g. `knitwork stack up`)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="images: folder or s3://bucket/prefix")
    p.add_argument("--output", required=True, help="folder or s3://bucket/prefix")
    p.add_argument("--task", choices=["inpaint", "denoise", "sr"], default="inpaint")
    p.add_argument("--preset", default="", help="a named preset; empty: search first [empty]")
    p.add_argument("--steps", type=int, default=0, help="steps per image; 0: the preset's [0]")
    p.add_argument("--synthetic", action="store_true", help="degrade clean inputs first")
    p.add_argument("--masks", default="", help="inpainting masks: folder or s3:// prefix")
    p.add_argument("--search-samples", type=int, default=8, help="trials of a search [8]")
    p.add_argument("--search-steps", type=int, default=300, help="steps of each trial [300]")
    p.add_argument("--experiment", default="", help="MLflow experiment [knitwork-TASK]")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="[1]")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"kfp.local's records [{DEFAULT_ROOT}]")


def run(args: argparse.Namespace) -> int:
    """Run the pipeline; 0 when every step succeeded, 1 (with the failing step's message)
    when one failed."""
    ray_address = os.environ.get("RAY_ADDRESS")
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if not ray_address or not tracking:
        print(
            "error: set RAY_ADDRESS and MLFLOW_TRACKING_URI (the pipeline's steps join a running "
            'Ray cluster and log to a tracking server): `eval "$(knitwork stack up)"` starts both'
        )
        return 2
    from kfp import local

    from pipeline.kubeflow.definition import knitwork_pipeline

    Path(args.root).mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=args.root)
    parameters = dict(
        input_uri=args.input, output_uri=args.output, task=args.task, preset=args.preset,
        steps=args.steps, masks_uri=args.masks, synthetic=args.synthetic,
        search_samples=args.search_samples, search_steps=args.search_steps, ray_mode="cluster",
        ray_address=ray_address, cpus_per_task=args.cpus_per_task,
        mlflow_experiment=args.experiment, mlflow_tracking_uri=tracking,
        s3_endpoint=os.environ.get("AWS_ENDPOINT_URL", ""),
    )  # fmt: skip
    try:
        knitwork_pipeline(**parameters)
    except RuntimeError as err:  # kfp.local: a step failed (its log is above)
        print(f"error: {err}")
        return 1
    print(f"pipeline finished; outputs in {args.output}, step records in {args.root}")
    return 0
