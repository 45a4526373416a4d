"""The Kubeflow pipeline (pipeline/kubeflow): the committed YAML is what the code compiles to,
the pipeline and each component compile, the RayJobs it creates validate against the KubeRay
CRD schema (with commands our CLI accepts), the steps that need no cluster do their work (the
validation and preset steps also through ``kfp.local``). The whole pipeline against a local Ray
cluster, S3 and MLflow server: test_kubeflow_e2e.py. No Kubernetes, no KFP server."""

from __future__ import annotations

import copy
import difflib
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from knitwork.presets import get_preset, to_yaml
from knitwork_cli.main import build_parser
from pipeline.kubeflow import components
from pipeline.kubeflow.batch import (
    rayjob_entrypoint,
    summary_metrics,
)
from pipeline.kubeflow.definition import COMPILED, compile_pipeline
from pipeline.kubeflow.rayjob import RayJobError, rayjob_manifest, wait_for_rayjob
from pipeline.kubeflow.steps import (
    SEARCH_STATE,
    TUNE_FOLDER,
    InputError,
    Settings,
    load_preset,
    restore_argv,
    run_uri,
    search_argv,
    search_exists,
    search_name,
    select_best_trial,
    validate_inputs,
    write_named_preset,
    write_uri,
)
from tests.infra.manifests import (
    CUDA_IMAGE,
    IMAGE,
    LIBRARY_ENV,
    PROVIDED,
    ROOT,
    env_the_code_reads,
    kubeflow_pipeline,
    ray_container,
    ray_groups_of,
    schema_errors,
)
from tune.search import SETTINGS_NAME

EXAMPLES = ROOT / "examples" / "images"
STEPS = {
    "validate-inputs", "search-hyperparameters", "select-best-trial", "write-named-preset",
    "restore-batch", "comparison-report", "batch-summary",
}  # fmt: skip
JOB = {"input_uri": "s3://knitwork/inputs", "output_uri": "s3://knitwork/restored",
       "preset_uri": "s3://knitwork/restored/.kubeflow/preset.yaml",
       "masks_uri": "s3://knitwork/masks", "synthetic": False}  # fmt: skip


def settings(**changes) -> Settings:
    base = dict(task="inpaint", tracking_uri="http://mlflow:5000", s3_endpoint="http://minio:9000",
                ray_mode="rayjob")  # fmt: skip
    return Settings(**(base | changes))


# -- the compiled pipeline ---------------------------------------------------------------


def test_committed_yaml_is_what_the_code_compiles(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "knitwork_pipeline.yaml").read_text().splitlines()
    committed = COMPILED.read_text().splitlines()
    diff = "\n".join(difflib.unified_diff(committed, fresh, "committed", "compiled", lineterm=""))
    assert not diff, (
        f"{COMPILED.relative_to(ROOT)} is stale: run `make kubeflow` "
        f"(python -m pipeline.kubeflow compile)\n{diff[:3000]}"
    )


def test_pipeline_runs_every_step_in_our_image_without_installing() -> None:
    spec, _ = kubeflow_pipeline()
    executors = spec["deploymentSpec"]["executors"]
    assert {name.removeprefix("exec-") for name in executors} == STEPS
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE, name
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{name}: installs packages at run time"
        assert "from pipeline.kubeflow." in command, f"{name}: calls the project's own code"
    assert CUDA_IMAGE == IMAGE + "-cuda"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    wanted = {"input_uri", "output_uri", "task", "preset", "steps", "search_samples", "ray_address",
              "ray_mode", "mlflow_experiment", "mlflow_tracking_uri", "s3_endpoint"}  # fmt: skip
    assert wanted <= set(inputs)
    assert "defaultValue" not in inputs["input_uri"], "the input URI has no default"


def test_search_runs_only_without_a_preset() -> None:
    spec, _ = kubeflow_pipeline()
    tasks = spec["root"]["dag"]["tasks"]
    refs = [t["componentRef"]["name"] for t in tasks.values()]
    (branches,) = [r for r in refs if r.startswith("comp-condition-branches")]
    inner = spec["components"][branches]["dag"]["tasks"]
    conditions = sorted(t["triggerPolicy"]["condition"] for t in inner.values())
    assert len(conditions) == 2 and "== ''" in conditions[0] + conditions[1]
    steps = {
        name: set(spec["components"][t["componentRef"]["name"]]["dag"]["tasks"])
        for name, t in inner.items()
    }
    assert sorted(steps.values(), key=len) == [
        {"write-named-preset"},
        {"search-hyperparameters", "select-best-trial"},
    ]


@pytest.mark.parametrize("name", sorted(s.replace("-", "_") for s in STEPS))
def test_each_component_compiles_alone(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(getattr(components, name), str(path))
    assert yaml.safe_load(path.read_text())["deploymentSpec"]["executors"]


# -- the RayJob path ---------------------------------------------------------------------


def restore_manifest(gpus: float) -> dict:
    s = settings(gpus_per_task=gpus, cpus_per_task=2 if gpus else 1)
    return rayjob_manifest(s.rayjob(rayjob_entrypoint(JOB, s), "knitwork-restore-"))


@pytest.mark.parametrize("gpus", [0.0, 0.25], ids=["cpu", "gpu"])
def test_rayjob_matches_the_crd_schema(gpus: float) -> None:
    doc = restore_manifest(gpus)
    assert schema_errors(doc) == []
    spec = doc["spec"]["rayClusterSpec"]
    (_, worker, _), = [g for g in ray_groups_of(spec) if not g[2]]  # fmt: skip
    assert ray_container(worker)["image"] == (CUDA_IMAGE if gpus else IMAGE)
    assert worker["minReplicas"] >= 1 and doc["spec"]["shutdownAfterJobFinishes"] is True
    wanted = (env_the_code_reads() - set(PROVIDED)) | set(LIBRARY_ENV)
    for _, group, _ in ray_groups_of(spec):
        assert wanted <= {e["name"] for e in ray_container(group)["env"]}


def test_rayjob_schema_check_can_fail() -> None:
    doc = copy.deepcopy(restore_manifest(0.0))
    doc["spec"]["entryPoint"] = doc["spec"].pop("entrypoint")
    assert any("'entryPoint' was unexpected" in e for e in schema_errors(doc))


def test_rayjob_commands_are_ones_our_cli_accepts() -> None:
    s = settings()
    entrypoint = rayjob_entrypoint(JOB, s)
    fetch, _, rest = entrypoint.partition(" && ")
    assert shlex.split(fetch)[:4] == ["python", "-m", "pipeline.kubeflow", "fetch"]
    assert shlex.join(["knitwork", *restore_argv(JOB, s)]) in rest
    parser = build_parser()
    parser.parse_args(restore_argv(JOB, s))
    parser.parse_args(search_argv("s3://knitwork/tune-images", JOB["output_uri"], 4, 100, s))


class FakeRayJobs:
    """The two calls of the kubernetes CustomObjectsApi that polling makes: a cluster stand-in."""

    def __init__(self, statuses: list[dict]) -> None:
        self.statuses = statuses

    def get_namespaced_custom_object(self, group, version, namespace, plural, name) -> dict:
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        return {"status": self.statuses.pop(0)}


def test_polling_waits_for_success_and_reports_failure() -> None:
    running = {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    done = {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}
    api = FakeRayJobs([{}, running, done])
    assert wait_for_rayjob(api, "r-1", "knitwork", timeout=5, poll=0)["jobStatus"] == "SUCCEEDED"
    failed = {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "message": "exit 2"}
    with pytest.raises(RayJobError, match=r"job FAILED.*exit 2"):
        wait_for_rayjob(FakeRayJobs([running, failed]), "r-2", "knitwork", timeout=5, poll=0)
    with pytest.raises(RayJobError, match="not finished"):
        wait_for_rayjob(FakeRayJobs([running] * 3), "r-3", "knitwork", timeout=0, poll=0)


# -- the steps that need no cluster ------------------------------------------------------


def test_validation_counts_images_or_says_why_not(tmp_path: Path) -> None:
    assert validate_inputs(str(EXAMPLES)) == len(list(EXAMPLES.glob("*.png")))
    with pytest.raises(InputError, match="no images found"):
        validate_inputs(str(tmp_path))
    with pytest.raises(InputError, match=r"cannot list it: .*no such folder"):
        validate_inputs(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="unsupported scheme"):
        validate_inputs("gs://bucket/photos")


def test_presets_are_written_beside_the_run(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    uri = write_named_preset("fast-inpaint", out)
    assert uri == run_uri(out, "preset.yaml") and load_preset(uri) == get_preset("fast-inpaint")
    search = tmp_path / "search"
    with pytest.raises(InputError, match="no best trial"):
        select_best_trial(str(search), "inpaint", out)
    search.mkdir()
    (search / "best-inpaint.yaml").write_text(to_yaml(get_preset("fast-denoise")))
    chosen = select_best_trial(str(search), "inpaint", out)
    assert load_preset(chosen) == get_preset("fast-denoise")
    with pytest.raises(ValueError, match="unknown preset"):
        write_named_preset("no-such-preset", out)


def test_the_steps_parameter_sets_the_batch_steps_of_either_preset(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    named = write_named_preset("fast-inpaint", out, steps=7)
    assert load_preset(named) == get_preset("fast-inpaint").with_steps(7)
    assert "set to 7 by the pipeline's `steps`" in Path(named).read_text()
    search = tmp_path / "search"
    search.mkdir()
    best = "# knitwork tune: best trial t1\n" + to_yaml(get_preset("fast-denoise"))
    (search / "best-inpaint.yaml").write_text(best)
    chosen = select_best_trial(str(search), "inpaint", out, steps=5)
    assert load_preset(chosen) == get_preset("fast-denoise").with_steps(5)
    assert "# knitwork tune: best trial t1\n" in Path(chosen).read_text()  # comments kept
    with pytest.raises(InputError, match="steps must be ≥ 0"):
        write_named_preset("fast-inpaint", out, steps=-1)


def test_a_rerun_of_the_same_search_resumes_it(tmp_path: Path) -> None:
    """The search's folder is named by what defines it: the same settings find the stored
    search (then `knitwork tune --resume`), other settings get a folder of their own."""
    s, out = settings(), str(tmp_path / "out")
    name = search_name("s3://b/clean", 4, 100, s)
    assert name == search_name("s3://b/clean", 4, 100, settings(cpus_per_task=2))
    others = {search_name("s3://b/clean", 8, 100, s), search_name("s3://b/other", 4, 100, s),
              search_name("s3://b/clean", 4, 100, settings(task="denoise"))}  # fmt: skip
    assert name.startswith("inpaint-") and name not in others and len(others) == 3
    assert not search_exists("s3://b/clean", out, 4, 100, s)
    write_uri(run_uri(out, TUNE_FOLDER, name, SEARCH_STATE), b"{}")
    assert search_exists("s3://b/clean", out, 4, 100, s)
    assert not search_exists("s3://b/clean", out, 8, 100, s)
    argv = search_argv("s3://b/clean", out, 4, 100, s, resume=True)
    args = build_parser().parse_args(argv)
    assert args.resume and args.name == name and args.storage == run_uri(out, TUNE_FOLDER)
    assert "--resume" not in search_argv("s3://b/clean", out, 4, 100, s)
    assert SEARCH_STATE == SETTINGS_NAME  # the file `knitwork tune` stores a search in


def test_the_module_command_compiles_and_fetches(tmp_path: Path) -> None:
    from pipeline.kubeflow.__main__ import main

    assert main(["compile", str(tmp_path / "p.yaml")]) == 0
    assert (tmp_path / "p.yaml").read_text() == COMPILED.read_text()
    uri = write_named_preset("fast-sr", str(tmp_path / "out"))
    assert main(["fetch", uri, str(tmp_path / "preset.yaml")]) == 0
    assert load_preset(str(tmp_path / "preset.yaml")) == get_preset("fast-sr")


def test_settings_refuse_a_cluster_without_address() -> None:
    with pytest.raises(InputError, match="needs ray_address"):
        settings(ray_mode="cluster")
    with pytest.raises(InputError, match="ray_mode must be"):
        settings(ray_mode="k8s")


def test_summary_metrics_are_numbers() -> None:
    summary = {"ok": 3, "failed": 1, "skipped": 0, "images_per_hour": 12.5,
               "mlflow_run_ids": ["abc"], "output_uri": "s3://b/o"}  # fmt: skip
    metrics = summary_metrics(summary, images=4)
    assert metrics == {"images_found": 4.0, "ok": 3.0, "failed": 1.0, "skipped": 0.0,
                       "images_per_hour": 12.5}  # fmt: skip


# -- the validation step through kfp.local -----------------------------------------------


@pytest.fixture
def kfp_local(tmp_path: Path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    yield local


@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # no DockerRunner
def test_local_validation_step(kfp_local, tmp_path: Path, capfd) -> None:
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(EXAMPLES / "bird.png", images / "bird.png")
    assert components.validate_inputs(input_uri=str(images), s3_endpoint="").output == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="FAILURE"):
        components.validate_inputs(input_uri=str(empty), s3_endpoint="")
    assert f"input {empty}: no images found" in "".join(capfd.readouterr())


@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # no DockerRunner
def test_local_named_preset_step(kfp_local, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    task = components.write_named_preset(
        preset="fast-denoise", output_uri=out, s3_endpoint="", steps=0
    )
    assert task.output == run_uri(out, "preset.yaml")
    assert load_preset(task.output) == get_preset("fast-denoise")


@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # no DockerRunner
def test_module_run_needs_services_and_stops_at_a_bad_input(tmp_path, monkeypatch, capsys):
    from pipeline.kubeflow.__main__ import main

    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["run", "--input", str(empty), "--output", str(tmp_path / "out"), "--preset",
            "fast-denoise", "--task", "denoise", "--root", str(tmp_path / "root")]  # fmt: skip
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(argv) == 2
    assert "set RAY_ADDRESS and MLFLOW_TRACKING_URI" in capsys.readouterr().out
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # never reached: validation fails first
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "validate-inputs" in out and f"input {empty}: no images found" in out
    assert not (tmp_path / "out").exists()  # nothing written past the failed step
