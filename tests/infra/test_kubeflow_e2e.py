"""The whole Kubeflow pipeline through ``kfp.local`` (SubprocessRunner without a venv: every
step a subprocess of this Python, its ``dsl.If``/``dsl.Else`` branches and ``dsl.OneOf``
resolved by kfp's local orchestrator) against real services on 127.0.0.1: the Ray cluster of
tests/services (joined by its GCS address), moto's S3 server for the inputs and outputs, and a
real MLflow tracking server. Two 24-px images; a named preset cut to 3 steps, or a search of
2 trials × 2 steps.

The steps get the services only from the pipeline's parameters and the environment they
inherit (S3 keys, Ray's loopback setting), which each test sets with monkeypatch."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from PIL import Image

from knitwork.presets import from_yaml, get_preset
from pipeline.kubeflow.definition import knitwork_pipeline
from pipeline.kubeflow.steps import load_preset, run_uri
from pipeline.manifest import MANIFEST_NAME, parse
from pipeline.storage import Storage, open_storage
from tests.services import LOOPBACK_ENV, free_port, write_images

IMAGES = ("a.png", "sub/b.png")
SIZE = 24  # px: write_images' crops of examples/images
# kfp warns that our image name has no "python" in it (it suggests the DockerRunner)
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")


@dataclass(frozen=True)
class Services:
    bucket: str
    endpoint: str  # moto's S3 server
    tracking: str  # the MLflow server
    ray_address: str  # the GCS address of the test cluster
    tmp: Path

    def storage(self, prefix: str) -> Storage:
        return open_storage(f"s3://{self.bucket}/{prefix}", self.endpoint)

    def arguments(self, output: str = "out", **changes) -> dict:
        """The pipeline's parameters for this bucket's inputs, in cluster mode."""
        base = dict(
            input_uri=f"s3://{self.bucket}/inputs", output_uri=f"s3://{self.bucket}/{output}",
            task="inpaint", synthetic=True, ray_mode="cluster", ray_address=self.ray_address,
            cpus_per_task=1.0, mlflow_tracking_uri=self.tracking, s3_endpoint=self.endpoint,
            mlflow_experiment=f"e2e-{self.bucket}",
        )  # fmt: skip
        return base | changes


@pytest.fixture
def services(ray_cluster, s3_endpoint, mlflow_server, bucket, tmp_path, monkeypatch) -> Services:
    """Two tiny images under s3://BUCKET/inputs/, and the environment the steps inherit: the
    S3 keys and Ray's loopback settings, but no endpoint, tracking URI or Ray address, so that
    those reach the steps only through the pipeline's parameters."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "RAY_AUTH_MODE",
                "AWS_EC2_METADATA_DISABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):  # fmt: skip
        monkeypatch.setenv(key, LOOPBACK_ENV[key])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an unreachable server: fail fast
    for key in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    svc = Services(
        bucket=bucket, endpoint=s3_endpoint, tracking=mlflow_server[0], tmp=tmp_path,
        ray_address=ray_cluster.get_runtime_context().gcs_address,
    )  # fmt: skip
    write_images(tmp_path / "in", IMAGES)
    inputs = svc.storage("inputs")
    for name in IMAGES:
        inputs.write(name, (tmp_path / "in" / name).read_bytes())
    return svc


def run_pipeline(svc: Services, label: str, **arguments) -> Path:
    """Run the pipeline locally; the folder of its run (one folder per step inside)."""
    from kfp import local

    root = svc.tmp / label
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    knitwork_pipeline(**arguments)  # RuntimeError naming the step when one fails
    (run,) = root.iterdir()
    return run


def metrics_of(run: Path) -> dict:
    """The batch-summary step's Metrics artifact, as kfp.local recorded it."""
    data = json.loads((run / "batch-summary" / "executor_output.json").read_text())
    (metrics,) = data["artifacts"]["metrics"]["artifacts"]
    return metrics["metadata"]


def report_of(run: Path) -> str:
    """The comparison-report step's HTML artifact."""
    data = json.loads((run / "comparison-report" / "executor_output.json").read_text())
    (report,) = data["artifacts"]["report"]["artifacts"]
    return Path(report["uri"]).read_text()


def manifest_of(out: Storage) -> dict:
    return parse(out.read(MANIFEST_NAME).decode("utf-8"), MANIFEST_NAME)


def assert_restored(out: Storage) -> dict:
    """Both images restored at their relative names, each with an "ok" manifest record."""
    for name in IMAGES:
        with Image.open(io.BytesIO(out.read(name))) as img:
            assert img.size == (SIZE, SIZE), name
    records = manifest_of(out)
    assert {n: r.status for n, r in records.items()} == dict.fromkeys(IMAGES, "ok")
    return records


def by_trial(rows: list[dict]) -> dict[str, tuple[str, str]]:
    """trials.csv rows: trial id → (status, objective)."""
    return {r["trial_id"]: (r["status"], r["objective"]) for r in rows}


def batch_runs(svc: Services, run_id: str) -> tuple[Run, list[Run]]:
    """The MLflow batch run ``run_id`` (checked FINISHED, with the run's preset file) and its
    image runs."""
    client = MlflowClient(tracking_uri=svc.tracking)
    batch = client.get_run(run_id)
    assert batch.info.status == "FINISHED" and batch.data.tags["kind"] == "batch"
    output = batch.data.params["output"]
    assert batch.data.params["preset"] == run_uri(output, "preset.yaml")
    children = client.search_runs(
        [batch.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    return batch, children


# -- (a) a named preset: the search is skipped ------------------------------------------------


def test_named_preset_run_restores_from_s3_to_s3_and_reports(services: Services) -> None:
    svc = services
    run = run_pipeline(svc, "run", **svc.arguments(preset="fast-inpaint", steps=3))
    out = svc.storage("out")
    records = assert_restored(out)
    preset_uri = run_uri(out.uri, "preset.yaml")
    assert load_preset(preset_uri, svc.endpoint) == get_preset("fast-inpaint").with_steps(3)
    assert out.read(".kubeflow/preset.yaml").startswith(b"# the named preset fast-inpaint\n")
    assert not (run / "search-hyperparameters").exists()  # the If branch did not run
    assert not out.exists(".kubeflow/search/best-inpaint.yaml")

    metrics = metrics_of(run)
    (batch_id,) = metrics["mlflow_run_ids"].split(",")
    assert (metrics["images_found"], metrics["ok"], metrics["failed"], metrics["skipped"]) == (
        2, 2, 0, 0,
    )  # fmt: skip
    assert metrics["images_per_hour"] > 0 and metrics["mean_psnr"] > 0
    assert metrics["output_uri"] == out.uri
    assert batch_id in report_of(run)  # the report names the batch's MLflow run

    batch, children = batch_runs(svc, batch_id)
    assert batch.data.params["optim.steps"] == "3"  # the preset file's, as `steps` set it
    assert sorted(r.data.tags["image"] for r in children) == sorted(IMAGES)
    assert {r.info.run_id for r in children} == {r.mlflow_run_id for r in records.values()}
    assert all(r.info.status == "FINISHED" and "psnr" in r.data.metrics for r in children)


def test_an_empty_input_prefix_fails_at_validate_inputs(services: Services, capfd) -> None:
    svc = services
    arguments = svc.arguments(input_uri=f"s3://{svc.bucket}/empty", preset="fast-inpaint")
    with pytest.raises(RuntimeError, match="validate-inputs"):
        run_pipeline(svc, "run", **arguments)
    said = "".join(capfd.readouterr())
    assert f"input s3://{svc.bucket}/empty: no images found" in said
    assert not svc.storage("out").exists(".kubeflow/preset.yaml")  # nothing ran after it


def test_a_failed_step_keeps_the_outputs_and_a_rerun_skips_finished_images(
    services: Services, capfd
) -> None:
    """The first run's MLflow server is unreachable: the batch still restores (untracked) and
    comparison-report fails. The rerun, with MLflow up, restores nothing again: it reports
    both images skipped, records them in MLflow late, and finishes the report."""
    svc = services
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    arguments = svc.arguments(preset="fast-inpaint", steps=3)
    with pytest.raises(RuntimeError, match="comparison-report"):
        run_pipeline(svc, "first", **(arguments | {"mlflow_tracking_uri": down}))
    said = "".join(capfd.readouterr())
    assert f"MLflow tracking at {down} failed" in said  # restore-batch went on without it
    assert "knitwork compare exited with" in said  # ... and the report could not
    out = svc.storage("out")
    first = assert_restored(out)
    assert not any(r.tracked for r in first.values())
    assert out.exists(".kubeflow/preset.yaml")

    run = run_pipeline(svc, "rerun", **arguments)
    metrics = metrics_of(run)
    assert (metrics["ok"], metrics["failed"], metrics["skipped"]) == (0, 0, 2)
    again = assert_restored(out)
    assert {n: r.attempt for n, r in again.items()} == dict.fromkeys(IMAGES, 1)  # not redone
    assert all(r.tracked for r in again.values())
    (batch_id,) = metrics["mlflow_run_ids"].split(",")
    assert batch_id in report_of(run)
    _, children = batch_runs(svc, batch_id)
    assert sorted(r.data.tags["image"] for r in children) == sorted(IMAGES)
    assert all(r.data.params["recorded_late"] == "true" for r in children)


# -- (b) no preset: search, then the best trial ---------------------------------------------


def test_search_run_uses_the_best_trial_and_a_rerun_resumes_the_search(
    services: Services, capfd
) -> None:
    """2 trials × 2 steps, the batch at 3 steps (``steps``); then the same run again into the
    same output: the stored search is resumed (no trial runs again, no second search run in
    MLflow) and the batch skips both images."""
    svc = services
    arguments = svc.arguments(preset="", search_samples=2, search_steps=2, steps=3)
    run = run_pipeline(svc, "run", **arguments)
    out = svc.storage("out")
    assert_restored(out)
    assert not (run / "write-named-preset").exists()  # the Else branch did not run
    best = from_yaml(out.read(".kubeflow/search/best-inpaint.yaml").decode(), "best")
    assert best.optim.steps == 2
    chosen = out.read(".kubeflow/preset.yaml").decode()
    assert chosen.startswith(f"# the best trial of the search in {run_uri(out.uri, 'search')}")
    assert from_yaml(chosen, "preset") == best.with_steps(3)
    trials = list(csv.DictReader(out.read(".kubeflow/search/trials.csv").decode().splitlines()))
    assert len(trials) == 2 and all(t["status"] in ("completed", "stopped") for t in trials)

    batch, _ = batch_runs(svc, metrics_of(run)["mlflow_run_ids"])
    assert batch.data.params["optim.steps"] == "3"
    client, experiment = MlflowClient(svc.tracking), batch.info.experiment_id
    (search,) = client.search_runs([experiment], "tags.kind = 'search'")
    assert search.info.status == "FINISHED"
    assert len(client.search_runs([experiment], "tags.kind = 'trial'")) == 2
    capfd.readouterr()

    rerun = run_pipeline(svc, "rerun", **arguments)
    assert "resuming the search in" in "".join(capfd.readouterr())
    again = list(csv.DictReader(out.read(".kubeflow/search/trials.csv").decode().splitlines()))
    assert by_trial(again) == by_trial(trials)  # the same trials, not run again
    assert len(client.search_runs([experiment], "tags.kind = 'search'")) == 1
    assert len(client.search_runs([experiment], "tags.kind = 'trial'")) == 2
    metrics = metrics_of(rerun)
    assert (metrics["ok"], metrics["failed"], metrics["skipped"]) == (0, 0, 2)
    assert metrics["mlflow_run_ids"] in report_of(rerun)
