"""The pipeline's lightweight components: each runs in the knitwork image (which holds kfp and
the project; nothing is pip-installed at run time) and calls `pipeline.kubeflow.steps` or
`pipeline.kubeflow.batch`, imported inside its body as KFP requires.

Shared settings travel as plain parameters: ``task``, ``tracking_uri``, ``s3_endpoint``,
``experiment``, ``ray_mode`` (``cluster``: join ``ray_address``; ``rayjob``: a RayJob of its
own in ``namespace`` running ``image``), ``cpus_per_task``, ``gpus_per_task``.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations as types.
from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from pipeline.kubeflow.rayjob import IMAGE

component = dsl.component(base_image=IMAGE, install_kfp_package=False)


@component
def validate_inputs(input_uri: str, s3_endpoint: str) -> int:
    """Count the images under the input URI; fail with a message when it cannot be listed or
    holds none."""
    from pipeline.kubeflow.steps import validate_inputs as count_images

    return count_images(input_uri, s3_endpoint)


@component
def write_named_preset(preset: str, output_uri: str, s3_endpoint: str, steps: int) -> str:
    """Write the named preset (steps > 0: with that many steps) as
    OUTPUT/.kubeflow/preset.yaml; return its URI."""
    from pipeline.kubeflow.steps import write_named_preset as write

    return write(preset, output_uri, s3_endpoint, steps)


@component
def search_hyperparameters(
    images_uri: str, input_uri: str, output_uri: str, samples: int, steps: int, task: str,
    tracking_uri: str, s3_endpoint: str, experiment: str, ray_mode: str, ray_address: str,
    cpus_per_task: float, gpus_per_task: float, image: str, namespace: str,
) -> str:  # fmt: skip
    """Run `knitwork tune` on Ray (the images: images_uri, else input_uri), resuming the same
    search when an earlier run into output_uri left it; return the URI of its outputs
    (best-TASK.yaml, trials.csv, objective.png)."""
    from pipeline.kubeflow.steps import Settings, run_search

    settings = Settings.pick(locals())
    settings.apply()
    return run_search(images_uri or input_uri, output_uri, samples, steps, settings)


@component
def select_best_trial(
    search_uri: str, task: str, output_uri: str, s3_endpoint: str, steps: int
) -> str:
    """Write the search's best trial (steps > 0: with that many steps) as
    OUTPUT/.kubeflow/preset.yaml; return its URI."""
    from pipeline.kubeflow.steps import select_best_trial as select

    return select(search_uri, task, output_uri, s3_endpoint, steps)


@component
def restore_batch(
    input_uri: str, output_uri: str, preset_uri: str, masks_uri: str, synthetic: bool,
    task: str, tracking_uri: str, s3_endpoint: str, experiment: str, ray_mode: str,
    ray_address: str, cpus_per_task: float, gpus_per_task: float, image: str, namespace: str,
) -> dict:  # fmt: skip
    """Restore every image under input_uri into output_uri on Ray with the preset file;
    return the batch summary (counts, seconds, images per hour, MLflow run ids)."""
    from pipeline.kubeflow.steps import Settings

    settings = Settings.pick(locals())
    settings.apply()  # first: ray, which `batch` may import, reads RAY_AUTH_MODE when imported
    from pipeline.kubeflow.batch import restore_batch as restore

    job = dict(
        input_uri=input_uri, output_uri=output_uri, preset_uri=preset_uri,
        masks_uri=masks_uri, synthetic=synthetic,
    )  # fmt: skip
    summary = restore(job, settings)
    print(summary)
    return summary


@component
def comparison_report(
    summary: dict, task: str, experiment: str, tracking_uri: str, report: Output[HTML]
) -> str:
    """The `knitwork compare` HTML report of the batch's MLflow runs; returns what it
    compared."""
    from pipeline.kubeflow.batch import write_report
    from pipeline.kubeflow.steps import use_services

    use_services(tracking_uri, "")
    return write_report(summary, experiment or f"knitwork-{task}", report.path)


@component
def batch_summary(summary: dict, images_found: int, metrics: Output[Metrics]) -> str:
    """The batch summary as metrics (counts, failures, images per hour, scores); the MLflow
    run ids and the output URI in the metrics' metadata. Returns a one-line summary."""
    from pipeline.kubeflow.batch import summary_metrics

    for name, value in summary_metrics(summary, images_found).items():
        metrics.log_metric(name, value)
    metrics.metadata["mlflow_run_ids"] = ",".join(summary.get("mlflow_run_ids", []))
    metrics.metadata["output_uri"] = summary.get("output_uri", "")
    counts = {k: int(summary.get(k, 0)) for k in ("ok", "failed", "skipped")}  # JSON: floats
    return (
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped of "
        f"{images_found} images; {summary.get('images_per_hour', 0.0):.1f} images/hour"
    )
