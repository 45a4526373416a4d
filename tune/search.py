"""`knitwork tune`: a Ray Tune search over a knitwork config, recorded in MLflow.

clean images → seeded degradations (those of `restore --synthetic`) → one Tune trial per
sampled config, fitting every image and reporting the mean (hole) PSNR every few steps → ASHA
stops poor trials → the best config as a preset file, trials.csv, objective.png, MLflow runs.

The search's definition is stored beside Tune's state (``SETTINGS_NAME``), so ``--resume``
rebuilds exactly the same images and space and lets Tune finish the unfinished trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from knitwork.config import Config
from knitwork.degradation import Degradation
from knitwork.io import DEFAULT_MAX_PIXELS, decode_image
from pipeline.cluster import ClusterOptions, connect, task_config, task_options
from pipeline.driver import image_seed
from pipeline.storage import StorageError, open_storage
from pipeline.tracking import flatten, tracking_uri
from tune import outputs
from tune.s3 import ray_storage
from tune.space import Param, default_space, max_steps, parse_space, space_spec, to_tune
from tune.trial import Case, TrialSetup, objective_label

SETTINGS_NAME = "knitwork-search.json"  # the search's definition, in its experiment folder
GRACE_FRACTION = 4  # ASHA's grace period: a quarter of the step budget
REDUCTION_FACTOR = 2  # ASHA keeps the better half of the trials at each rung


@dataclass(kw_only=True)
class Definition:
    """What a search is: stored at the start, reloaded by --resume."""

    degradation: Degradation  # the task, and how each clean image is degraded
    images: str  # clean images: folder or s3:// URI (absolute)
    base: dict[str, Any]  # the base config (preset + --steps), as Config.to_dict()
    preset: str
    space: dict[str, Any]  # tune.space spec: dotted field → distribution or fixed value
    num_samples: int = 8
    scheduler: Literal["asha", "none"] = "asha"
    search: Literal["random", "optuna"] = "random"
    reports: int = 8  # objective reports per trial
    seed: int = 0  # base seed of the images' degradations and of the sampler
    max_pixels: int = DEFAULT_MAX_PIXELS
    experiment: str = ""
    search_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    parent_run_id: str | None = None
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def task(self) -> str:
        return self.degradation.task

    @property
    def config(self) -> Config:
        return Config.from_dict(self.base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Definition:
        return cls(**(data | {"degradation": Degradation.from_dict(data["degradation"])}))

    def params(self) -> list[Param]:
        return parse_space(self.space, "the search space", self.config)


@dataclass(kw_only=True)
class SearchOptions:
    """A search to start, or (with ``resume``) the one stored at storage/name to finish."""

    definition: Definition
    storage: str = "tune-results"  # where Tune keeps its state: folder or s3:// URI
    name: str | None = None  # default: tune-TASK
    output: str | None = None  # default: the experiment folder, storage/name
    resume: bool = False
    cluster: ClusterOptions = field(default_factory=ClusterOptions)  # per trial; in flight =
    # the most trials at once
    s3_endpoint_url: str | None = None
    track: bool = True


@dataclass(kw_only=True)
class SearchOutcome:
    definition: Definition
    experiment_path: str
    rows: list[outputs.TrialRow] = field(default_factory=list)
    best: outputs.TrialRow | None = None
    files: dict[str, str] = field(default_factory=dict)  # output name → where it was written
    interrupted: bool = False
    parent_run_id: str | None = None


def new_definition(
    degradation: Degradation, images: str, base: Config, preset: str, space, **kw
) -> Definition:
    """A definition from a base config and a space (a list of Params, or None: the default)."""
    params = space if space is not None else default_space(base)
    uri = open_storage(images).uri  # absolute, so that --resume works from anywhere
    return Definition(
        degradation=degradation,
        images=uri,
        base=base.to_dict(),
        preset=preset,
        space=space_spec(params),
        **kw,
    )


def experiment_uri(options: SearchOptions) -> str:
    name = options.name or f"tune-{options.definition.task}"
    storage = open_storage(options.storage, options.s3_endpoint_url)
    return storage.uri.rstrip("/") + "/" + name


def load_cases(d: Definition, endpoint: str | None) -> tuple[Case, ...]:
    """Every image under ``d.images``, degraded as `restore --synthetic` degrades it."""
    source = open_storage(d.images, endpoint)
    names = source.list_images()
    if not names:
        raise StorageError(f"{source.uri}: no images found for the search")
    cases = []
    for name in names:
        pixels = decode_image(source.read(name), source.join(name), d.max_pixels).pixels
        seed = image_seed(d.seed, name)
        obs, truth = d.degradation.apply(pixels, seed)
        cases.append(Case(name=name, observation=obs, truth=truth, seed=seed))
    return tuple(cases)


def trainable(setup: TrialSetup, cpus: float, gpus: float):
    from ray import tune

    from tune.trial import run_trial

    return tune.with_resources(
        tune.with_parameters(run_trial, setup=setup), {"cpu": cpus, "gpu": gpus}
    )


def _algorithms(d: Definition, budget: int, report_every: int, max_concurrent: int | None):
    """The search algorithm (seeded) and the scheduler (ASHA on the ``step`` of each report)."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if d.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=d.seed)
        if max_concurrent:
            search = ConcurrencyLimiter(search, max_concurrent=max_concurrent)
    else:
        search = BasicVariantGenerator(random_state=d.seed, max_concurrent=max_concurrent or 0)
    scheduler, budget = None, max(1, budget)
    if d.scheduler == "asha":
        grace = max(report_every, budget // GRACE_FRACTION)
        scheduler = ASHAScheduler(
            time_attr="step",
            max_t=budget,
            grace_period=min(grace, budget),
            reduction_factor=REDUCTION_FACTOR,
        )
    return search, scheduler


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _run_config(name: str, path: str, fs, callback):
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=path,
        storage_filesystem=fs,
        verbose=0,  # our callback prints one line per ended trial
        callbacks=[callback],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=1),  # a lost worker: retry once
    )


def build_tuner(options: SearchOptions, setup: TrialSetup, resources: dict, callback, restore):
    """A new Tuner, or the stored one restored (unfinished and errored trials resumed)."""
    from ray import tune

    d = options.definition
    path, fs = ray_storage(experiment_uri(options), options.s3_endpoint_url)
    fn = trainable(setup, resources["num_cpus"], resources["num_gpus"])
    if restore:
        return tune.Tuner.restore(
            path, trainable=fn, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )
    params = d.params()
    budget = max_steps(params, setup.base)
    limit = options.cluster.max_in_flight
    search, scheduler = _algorithms(d, budget, setup.report_every, limit)
    storage_path, name = path.rsplit("/", 1)
    return tune.Tuner(
        fn,
        param_space=to_tune(params),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="max",
            num_samples=d.num_samples,
            search_alg=search,
            scheduler=scheduler,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=_run_config(name, storage_path, fs, callback),
    )


def unfinished_trials(options: SearchOptions) -> int:
    """Trials that Tune's saved state shows neither terminated nor errored. Read from the
    stored state because an interrupted run marks its live trials terminated in memory."""
    from ray.tune import ExperimentAnalysis

    path, fs = ray_storage(experiment_uri(options), options.s3_endpoint_url)
    trials = ExperimentAnalysis(path, storage_filesystem=fs).trials
    return sum(t.status not in ("TERMINATED", "ERROR") for t in trials)


def _settings(options: SearchOptions):
    """The storage holding the experiment folder, and the settings file's name in it."""
    storage = open_storage(options.storage, options.s3_endpoint_url)
    name = options.name or f"tune-{options.definition.task}"
    return storage, f"{name}/{SETTINGS_NAME}"


def write_definition(options: SearchOptions) -> None:
    storage, name = _settings(options)
    text = json.dumps(options.definition.to_dict(), indent=2)
    storage.write(name, text.encode("utf-8"))


def prepare(options: SearchOptions) -> bool:
    """Check the experiment folder against --resume; load the stored definition when
    resuming. Returns whether Tune's own state is there to restore."""
    from ray import tune

    storage, name = _settings(options)
    path, fs = ray_storage(experiment_uri(options), options.s3_endpoint_url)
    stored = storage.exists(name)
    restorable = tune.Tuner.can_restore(path, storage_filesystem=fs)
    where = experiment_uri(options)
    if not options.resume:
        if stored or restorable:
            raise ValueError(
                f"{where}: a search with this name exists already: add --resume to finish it, "
                "or choose another --name (or --storage)"
            )
        return False
    if not stored:
        raise ValueError(f"{where}: no search to resume ({SETTINGS_NAME} not found)")
    data = json.loads(storage.read(name).decode("utf-8"))
    stored = Definition.from_dict(data)
    if stored.task != options.definition.task:
        raise ValueError(
            f"{where}: this is a --task {stored.task} search, not {options.definition.task}"
        )
    options.definition = stored
    return restorable


def _search_params(d: Definition, options: SearchOptions) -> dict[str, str]:
    settings = {
        "task": d.task,
        "images": d.images,
        "preset": d.preset,
        "space": json.dumps(d.space, sort_keys=True),
        "scheduler": d.scheduler,
        "search_alg": d.search,
        "num_samples": d.num_samples,
        "reports": d.reports,
        "seed": d.seed,
        "storage": experiment_uri(options),
    }
    return flatten(d.base) | {k: str(v) for k, v in (settings | d.degradation.params()).items()}


def run_search(options: SearchOptions) -> SearchOutcome:
    """Start (or resume) the search, wait for it, then write its outputs and MLflow runs."""
    restore = prepare(options)
    d = options.definition
    cases = load_cases(d, options.s3_endpoint_url)
    with connect(options.cluster) as ray:
        resources = task_options(ray, options.cluster)
        trial_base = task_config(ray, options.cluster, d.config, resources["num_gpus"])
        return _search(options, restore, cases, resources, trial_base)


def _search(
    options: SearchOptions, restore: bool, cases, resources: dict, trial_base: Config
) -> SearchOutcome:
    from tune.runs import LiveRuns, SearchRuns, record_trials

    d = options.definition
    uri, name = experiment_uri(options), options.name or f"tune-{d.task}"
    base, params = d.config, d.params()
    every = max(1, math.ceil(max_steps(params, base) / max(1, d.reports)))
    setup = TrialSetup(
        task=d.task,
        base=trial_base,
        cases=cases,
        report_every=every,
        threads=int(max(1, resources["num_cpus"])),
        pack=options.cluster.pack,
    )
    runs = SearchRuns(tracking_uri(), d.experiment or f"knitwork-{d.task}", options.track)
    tags = {"kind": "search", "task": d.task, "search": name, "search_id": d.search_id}
    tags["experiment_path"] = uri
    d.parent_run_id = runs.open(d.parent_run_id, _search_params(d, options), tags, name)
    write_definition(options)
    trial_tags = {"kind": "trial", "task": d.task, "search": name, "search_id": d.search_id}
    callback = LiveRuns(runs, base, trial_tags, d.num_samples)
    verb = "resuming" if options.resume else "starting"
    print(
        f"{verb} search {name}: {d.num_samples} trials, {len(cases)} images, search {d.search}, "
        f"scheduler {d.scheduler}, reports every {every} steps; Tune state in {uri}",
        file=sys.stderr,
    )
    grid = build_tuner(options, setup, resources, callback, restore).fit()
    outcome = SearchOutcome(definition=d, experiment_path=uri, parent_run_id=d.parent_run_id)
    if unfinished_trials(options):
        outcome.interrupted = True
        return outcome
    outcome.rows = [outputs.trial_row(r) for r in grid]
    record_trials(runs, grid, outcome.rows, base, trial_tags)
    outcome.best = outputs.best_row(outcome.rows)
    outcome.files = write_outputs(options, outcome, params, runs)
    return outcome


def write_outputs(options: SearchOptions, outcome: SearchOutcome, params, runs) -> dict[str, str]:
    """best-TASK.yaml, trials.csv and objective.png in --output; the parent run closed."""
    d = outcome.definition
    target = open_storage(options.output or outcome.experiment_path, options.s3_endpoint_url)
    label = objective_label(d.task)
    files = {
        outputs.CSV_NAME: outputs.trials_csv(outcome.rows, params),
        outputs.PLOT_NAME: outputs.objective_plot(outcome.rows, params, label),
    }
    name = options.name or f"tune-{d.task}"
    if outcome.best is not None:
        files[outputs.best_name(d.task)] = outputs.best_preset(d.config, outcome.best, name, label)
    for file_name, data in files.items():
        target.write(file_name, data)
    statuses = ("completed", "stopped", "diverged", "error")
    metrics = {s: float(sum(r.status == s for r in outcome.rows)) for s in statuses}
    metrics["trials"] = float(len(outcome.rows))
    if outcome.best is not None:
        metrics["best_objective"] = outcome.best.objective
        best_run = runs.run_of(outcome.best.trial_id) or ""
        runs.tag_parent({"best_trial_id": outcome.best.trial_id, "best_run_id": best_run})
    runs.finish(metrics, files, failed=outcome.best is None)
    return {file_name: target.join(file_name) for file_name in files}
