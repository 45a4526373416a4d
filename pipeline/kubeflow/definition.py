"""The Kubeflow pipeline ``knitwork-restore`` and its compilation to infra/kubeflow/.

validate inputs → (no preset named: search on Ray → best trial) | (preset named: that preset)
→ the preset file in OUTPUT/.kubeflow → batch restoration on Ray → comparison report (HTML
artifact) and summary (metrics). Every step is cached off: they read and write external
storage, so an unchanged parameter set does not mean an unchanged result.

Credentials reach the step pods from Kubernetes Secrets of the same names as infra/k8s (copies
in the namespace KFP runs the pods in), through kfp-kubernetes, so they are in the compiled
YAML's platform spec and never in a parameter: the steps that read or write S3 get the keys
of ``knitwork-s3`` (and the region settings of infra/kuberay), the steps that join the
RayCluster (search, restore) the token of ``knitwork-ray-token`` as RAY_AUTH_TOKEN.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from pipeline.kubeflow.components import (
    batch_summary,
    comparison_report,
    restore_batch,
    search_hyperparameters,
    select_best_trial,
    validate_inputs,
    write_named_preset,
)
from pipeline.kubeflow.rayjob import (
    IMAGE,
    S3_ENV,
    S3_KEYS,
    S3_SECRET,
    TOKEN_KEY,
    TOKEN_SECRET,
)

PIPELINE_NAME = "knitwork-restore"
COMPILED = Path(__file__).resolve().parents[2] / "infra" / "kubeflow" / "knitwork_pipeline.yaml"
# In-cluster addresses of infra/k8s and infra/kuberay (the pipeline's pods run in another
# namespace than `knitwork`, hence the namespaced Service names).
RAY_ADDRESS = "ray://knitwork-head-svc.knitwork.svc:10001"
TRACKING_URI = "http://mlflow.knitwork.svc:5000"
S3_ENDPOINT = "http://minio.knitwork.svc:9000"


def _no_cache(*tasks: dsl.PipelineTask) -> None:
    for task in tasks:
        task.set_caching_options(False)


def _s3_credentials(*tasks: dsl.PipelineTask) -> None:
    """The S3 keys from the Secret, named as boto3 and pyarrow read them, and the region
    settings that infra/kuberay sets beside them."""
    for task in tasks:
        kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_KEYS})
        for name, value in S3_ENV.items():
            task.set_env_variable(name, value)


def _ray_token(*tasks: dsl.PipelineTask) -> None:
    """The Ray token as RAY_AUTH_TOKEN; with it the step sets RAY_AUTH_MODE=token itself
    (`steps.use_services`), in `cluster` mode only, so kfp.local runs are unchanged."""
    for task in tasks:
        kubernetes.use_secret_as_env(task, TOKEN_SECRET, {TOKEN_KEY: "RAY_AUTH_TOKEN"})


DESCRIPTION = (
    "Neural Knitworks batch restoration: validate the inputs, search hyperparameters on Ray "
    "unless a preset is named, restore on Ray with the chosen preset, report and summarise."
)


@dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
def knitwork_pipeline(
    input_uri: str,
    output_uri: str,
    task: str = "inpaint",
    preset: str = "",
    steps: int = 0,
    masks_uri: str = "",
    synthetic: bool = False,
    search_images_uri: str = "",
    search_samples: int = 8,
    search_steps: int = 300,
    ray_mode: str = "cluster",
    ray_address: str = RAY_ADDRESS,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    mlflow_experiment: str = "",
    mlflow_tracking_uri: str = TRACKING_URI,
    s3_endpoint: str = S3_ENDPOINT,
    image: str = IMAGE,
    namespace: str = "knitwork",
) -> None:
    """Restore INPUT into OUTPUT with a named preset, or with the best of a search; ``steps``
    > 0 sets the batch's number of steps per image (0: the preset's, or the search's)."""
    shared = dict(
        task=task, tracking_uri=mlflow_tracking_uri, s3_endpoint=s3_endpoint,
        experiment=mlflow_experiment, ray_mode=ray_mode, ray_address=ray_address,
        cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, image=image,
        namespace=namespace,
    )  # fmt: skip
    found = validate_inputs(input_uri=input_uri, s3_endpoint=s3_endpoint)
    with dsl.If(preset == "", name="search"):
        searched = search_hyperparameters(
            images_uri=search_images_uri, input_uri=input_uri, output_uri=output_uri,
            samples=search_samples, steps=search_steps, **shared,
        ).after(found)  # fmt: skip
        best = select_best_trial(
            search_uri=searched.output, task=task, output_uri=output_uri,
            s3_endpoint=s3_endpoint, steps=steps,
        )  # fmt: skip
    with dsl.Else(name="named-preset"):
        named = write_named_preset(
            preset=preset, output_uri=output_uri, s3_endpoint=s3_endpoint, steps=steps
        ).after(found)
    restored = restore_batch(
        input_uri=input_uri, output_uri=output_uri, preset_uri=dsl.OneOf(best.output, named.output),
        masks_uri=masks_uri, synthetic=synthetic, **shared,
    )  # fmt: skip
    report = comparison_report(
        summary=restored.output, task=task, experiment=mlflow_experiment,
        tracking_uri=mlflow_tracking_uri,
    )  # fmt: skip
    summary = batch_summary(summary=restored.output, images_found=found.output)
    _no_cache(found, searched, best, named, restored, report, summary)
    _s3_credentials(found, searched, best, named, restored)
    _ray_token(searched, restored)


def compile_pipeline(path: str | Path = COMPILED) -> Path:
    """Compile the pipeline to ``path`` (YAML: KFP's pipeline spec, then, as a second
    document, the Kubernetes platform spec of its Secrets); returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(knitwork_pipeline, str(path))
    return path
