"""The work of the pipeline's steps as plain functions over the project's own code; the
components (`pipeline.kubeflow.components`) are thin wrappers that call these in their pod.

The search and the report run the ``knitwork`` command (``tune``, ``compare``) in a
subprocess: those layers sit above ``pipeline`` and are never imported from it. What a run
keeps beside its outputs lives in OUTPUT/.kubeflow/ (a hidden folder: never listed as an
input image): the search's outputs and the preset the batch used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from knitwork.config import Config
from knitwork.presets import from_yaml, get_preset, to_yaml
from pipeline.kubeflow.rayjob import IMAGE, RayJobSpec, run_rayjob
from pipeline.storage import IMAGE_EXTENSIONS, StorageError, open_storage, redact

RUN_FOLDER = ".kubeflow"  # OUTPUT/.kubeflow: the search and the preset of this pipeline
PRESET_NAME = "preset.yaml"
SEARCH_FOLDER = "search"  # the latest search's outputs: best-TASK.yaml, trials.csv, ...
TUNE_FOLDER = "tune"  # Ray Tune's state: one folder per distinct search (`search_name`)
SEARCH_STATE = "knitwork-search.json"  # a search's definition in its folder (tune.search)
LOCAL_PRESET = "/tmp/knitwork-preset.yaml"  # where a RayJob's head puts the preset file
RAY_MODES = ("cluster", "rayjob")
ERROR_LINES = 20  # lines of a failed command's output quoted in the error


class InputError(ValueError):
    """The pipeline's inputs cannot be used; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where a step's work runs and is recorded (the pipeline's shared parameters)."""

    task: str
    tracking_uri: str
    s3_endpoint: str = ""  # "" : AWS_ENDPOINT_URL, else AWS
    experiment: str = ""  # "" : knitwork-TASK
    ray_mode: str = "cluster"  # cluster: join ray_address; rayjob: a RayJob of its own
    ray_address: str = ""
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    image: str = IMAGE
    namespace: str = "knitwork"

    def __post_init__(self) -> None:
        if self.ray_mode not in RAY_MODES:
            raise InputError(f"ray_mode must be one of {RAY_MODES}; got {self.ray_mode!r}")
        if self.ray_mode == "cluster" and not self.ray_address:
            raise InputError("ray_mode 'cluster' needs ray_address (e.g. ray://HEAD-SVC:10001)")

    @classmethod
    def pick(cls, values: dict) -> Settings:
        """The settings among a component's arguments (``locals()``), the rest ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"knitwork-{self.task}"

    @property
    def endpoint(self) -> str | None:
        return self.s3_endpoint or None

    def apply(self) -> None:
        """Point this process at the services; call it before ray is imported."""
        use_services(self.tracking_uri, self.s3_endpoint, ray_token=self.ray_mode == "cluster")

    def rayjob(self, entrypoint: str, prefix: str) -> RayJobSpec:
        return RayJobSpec(
            entrypoint=entrypoint, name_prefix=prefix, tracking_uri=self.tracking_uri,
            s3_endpoint=self.s3_endpoint, namespace=self.namespace, image=self.image,
            gpus=self.gpus_per_task > 0,
        )  # fmt: skip


def use_services(tracking_uri: str, s3_endpoint: str, *, ray_token: bool = False) -> None:
    """Point this step's process at MLflow and S3 (as `knitwork_cli.environment` does for the
    command): called first by a component, its process's entry point, and nowhere else.

    ``ray_token`` (cluster mode): ``RAY_AUTH_MODE=token`` when this process has a Ray token and
    no mode. Ray joins a cluster at an explicit address with token auth only when told so, and
    reads the mode once, when ray is imported. A step pod that joins the RayCluster gets the
    token, from the knitwork-ray-token Secret, as RAY_AUTH_TOKEN (`pipeline.kubeflow.definition`);
    kfp.local and clusters without auth have none, so nothing changes for them."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if ray_token and os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def validate_inputs(input_uri: str, s3_endpoint: str = "") -> int:
    """The number of images under ``input_uri``; InputError when it cannot be listed or
    holds none."""
    try:
        names = open_storage(input_uri, s3_endpoint or None).list_images()
    except StorageError as err:
        raise InputError(f"input {input_uri}: cannot list it: {redact(str(err))}") from None
    if not names:
        raise InputError(
            f"input {input_uri}: no images found ({', '.join(IMAGE_EXTENSIONS)}): check the "
            "URI, the prefix and the credentials"
        )
    print(f"{input_uri}: {len(names)} images, e.g. {', '.join(names[:3])}")
    return len(names)


def run_uri(output_uri: str, *names: str) -> str:
    """A URI inside OUTPUT/.kubeflow."""
    return "/".join([output_uri.rstrip("/"), RUN_FOLDER, *names])


def read_uri(uri: str, s3_endpoint: str = "") -> bytes:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return open_storage(parent or ".", s3_endpoint or None).read(name)


def write_uri(uri: str, data: bytes, s3_endpoint: str = "") -> str:
    parent, _, name = uri.rstrip("/").rpartition("/")
    open_storage(parent or ".", s3_endpoint or None).write(name, data)
    return uri


def preset_file(config: Config, header: str, steps: int = 0) -> bytes:
    """A preset file: comment lines, then the config; ``steps`` > 0 overrides its number of
    optimisation steps (the pipeline's ``steps``), and the header says so."""
    if steps < 0:
        raise InputError(f"steps must be ≥ 0 (0: the preset's own); got {steps}")
    if steps:
        config = config.with_steps(steps)
        header += f"# optim.steps set to {steps} by the pipeline's `steps` parameter\n"
    return (header + to_yaml(config)).encode("utf-8")


def write_named_preset(preset: str, output_uri: str, s3_endpoint: str = "", steps: int = 0) -> str:
    """The named preset written as OUTPUT/.kubeflow/preset.yaml; returns its URI."""
    data = preset_file(get_preset(preset), f"# the named preset {preset}\n", steps)
    return write_uri(run_uri(output_uri, PRESET_NAME), data, s3_endpoint)


def select_best_trial(
    search_uri: str, task: str, output_uri: str, s3_endpoint: str = "", steps: int = 0
) -> str:
    """The search's best trial (its ``best-TASK.yaml``, checked to load) written as
    OUTPUT/.kubeflow/preset.yaml, its comments kept; returns its URI."""
    source = f"{search_uri.rstrip('/')}/best-{task}.yaml"  # tune.outputs.best_name
    try:
        text = read_uri(source, s3_endpoint).decode("utf-8")
    except StorageError as err:
        raise InputError(f"the search left no best trial ({redact(str(err))})") from None
    comments = itertools.takewhile(lambda line: line.startswith("#"), text.splitlines())
    header = f"# the best trial of the search in {search_uri}\n" + "".join(
        line + "\n" for line in comments
    )
    data = preset_file(from_yaml(text, source), header, steps)
    return write_uri(run_uri(output_uri, PRESET_NAME), data, s3_endpoint)


def load_preset(uri: str, s3_endpoint: str = "") -> Config:
    return from_yaml(read_uri(uri, s3_endpoint).decode("utf-8"), uri)


def knitwork_command(argv: list[str], settings: Settings) -> str:
    """Run ``knitwork ARGV`` here (cluster mode: joining ray_address) or as a RayJob; returns
    the command's output, or the RayJob's name."""
    if settings.ray_mode == "rayjob":
        return run_rayjob(settings.rayjob(shlex.join(["knitwork", *argv]), f"knitwork-{argv[0]}-"))
    return run_cli([*argv, "--address", settings.ray_address])


def run_cli(argv: list[str]) -> str:
    """``knitwork ARGV`` in a subprocess of this Python; its output, or RuntimeError with the
    end of it."""
    command = [sys.executable, "-m", "knitwork_cli", *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout, end="", flush=True)
    print(done.stderr, end="", file=sys.stderr, flush=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-ERROR_LINES:])
        raise RuntimeError(f"knitwork {argv[0]} exited with {done.returncode}:\n{redact(tail)}")
    return done.stdout


def search_name(images_uri: str, samples: int, steps: int, s: Settings) -> str:
    """The search's folder in OUTPUT/.kubeflow/tune: TASK-HASH of what defines the search, so
    that a rerun with the same settings finds it (and resumes it), and other settings start
    a search of their own beside it."""
    key = json.dumps([s.task, images_uri, samples, steps, s.experiment_name])
    return f"{s.task}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:10]}"


def search_argv(
    images_uri: str, output_uri: str, samples: int, steps: int, s: Settings, resume: bool = False
) -> list[str]:
    """``knitwork tune`` with its state in OUTPUT/.kubeflow/tune/NAME (``search_name``) and its
    outputs in OUTPUT/.kubeflow/search; ``resume``: finish (or reuse) the stored search."""
    return [
        "tune", "--task", s.task, "--images", images_uri, "--num-samples", str(samples),
        "--steps", str(steps), "--storage", run_uri(output_uri, TUNE_FOLDER),
        "--name", search_name(images_uri, samples, steps, s),
        "--output", run_uri(output_uri, SEARCH_FOLDER), "--cpus-per-trial", str(s.cpus_per_task),
        "--gpus-per-trial", str(s.gpus_per_task), "--experiment", s.experiment_name,
        *(["--s3-endpoint-url", s.s3_endpoint] if s.s3_endpoint else []),
        *(["--resume"] if resume else []),
    ]  # fmt: skip


def search_exists(images_uri: str, output_uri: str, samples: int, steps: int, s: Settings) -> bool:
    """Whether an earlier run of this search (same settings, same OUTPUT) stored its
    definition: then `knitwork tune --resume` finishes it, or rereads it when it finished."""
    name = search_name(images_uri, samples, steps, s)
    return open_storage(run_uri(output_uri, TUNE_FOLDER), s.endpoint).exists(
        f"{name}/{SEARCH_STATE}"
    )


def run_search(images_uri: str, output_uri: str, samples: int, steps: int, s: Settings) -> str:
    """The search, on the cluster or as a RayJob (resumed when an earlier run of the same
    search into OUTPUT left its state); returns the URI of its outputs."""
    if samples < 1 or steps < 1:
        raise InputError(f"search_samples and search_steps must be ≥ 1; got {samples}, {steps}")
    resume = search_exists(images_uri, output_uri, samples, steps, s)
    if resume:
        name = search_name(images_uri, samples, steps, s)
        print(f"resuming the search in {run_uri(output_uri, TUNE_FOLDER, name)}", flush=True)
    knitwork_command(search_argv(images_uri, output_uri, samples, steps, s, resume), s)
    return run_uri(output_uri, SEARCH_FOLDER)


def restore_argv(job: dict[str, Any], s: Settings) -> list[str]:
    """``knitwork restore`` for a RayJob, with the preset file fetched to LOCAL_PRESET."""
    return [
        "restore", job["input_uri"], job["output_uri"], "--task", s.task,
        "--preset-file", LOCAL_PRESET, "--cpus-per-task", str(s.cpus_per_task),
        "--gpus-per-task", str(s.gpus_per_task), "--experiment", s.experiment_name,
        "--quiet", *(["--masks", job["masks_uri"]] if job.get("masks_uri") else []),
        *(["--synthetic"] if job.get("synthetic") else []),
    ]  # fmt: skip
