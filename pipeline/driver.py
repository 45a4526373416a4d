"""The batch driver: every image under INPUT restored into OUTPUT, one Ray task per image.

list inputs → skip what the manifest says is done → submit tasks (bounded in flight) →
``ray.wait`` with timeouts → write each result's manifest line → record it in MLflow →
summary. A failed image is recorded and never stops the batch.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from knitwork import __version__
from knitwork.config import Config
from knitwork.degradation import Degradation
from knitwork.io import DEFAULT_MAX_PIXELS
from pipeline.cluster import (
    ClusterOptions,
    connect,
    in_flight_limit,
    submit_all,
    task_config,
    task_options,
)
from pipeline.manifest import MANIFEST_NAME, Manifest, Record, config_hash
from pipeline.storage import (
    IMAGE_EXTENSIONS,
    LocalStorage,
    S3Storage,
    Storage,
    StorageError,
    name_folds,
    open_storage,
)
from pipeline.summary import BatchSummary, aggregate
from pipeline.tracking import Tracker, flatten, tracking_uri
from pipeline.worker import Job, Outcome, process_pack

GIT_SECONDS = 5  # `git rev-parse` for the code version recorded with a batch
AUTO_GPU_TASK_IMAGES = 16  # images per task on GPUs when --pack is auto (the task packs them)


@dataclass(frozen=True, kw_only=True)
class RestoreOptions:
    input: str  # folder or s3://bucket/prefix of images
    output: str  # folder or s3://bucket/prefix for the restored images and the manifest
    config: Config
    degradation: Degradation  # the task, and with ``synthetic`` how inputs are degraded
    preset: str = ""  # the config's name, for the records
    seed: int = 0  # base seed; each image adds a hash of its name
    synthetic: bool = False  # inputs are clean: degrade them, score the results
    masks: str | None = None  # inpainting masks under the same relative names
    ground_truth: str | None = None  # clean images under the same names, for scoring
    overwrite: bool = False  # redo images the manifest shows finished
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    experiment: str | None = None  # MLflow experiment [knitwork-TASK]
    s3_endpoint_url: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True
    track: bool = True

    @property
    def task(self) -> str:
        return self.degradation.task


def image_seed(base: int, name: str) -> int:
    """The image's own seed: the base seed plus a stable hash of its relative name (a local
    name that is not valid UTF-8 is hashed as the bytes it has on disk)."""
    return (base + zlib.crc32(name.encode("utf-8", "surrogateescape"))) % (2**31)


def shown(name: str) -> str:
    """``name`` fit to print and record: bytes that are not UTF-8 shown as escapes."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def name_problem(name: str, *stores: Storage | None) -> str | None:
    """Why the image ``name`` cannot be restored (a name that is not UTF-8, one that would
    leave its folder or prefix, such as ``a//b.png`` or ``a/../b.png``, or one the storage
    would fold into another, such as ``p/./w.png``: ``name_folds``), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{shown(name)!r}: the name is not valid UTF-8; rename the file"
    for store in stores:
        if store is not None:
            try:
                store.join(name)
            except StorageError as err:
                return str(err)
    return name_folds(name)


def refuse_nested(source: Storage, target: Storage) -> None:
    """OUTPUT inside INPUT would have outputs read back as inputs: refuse it."""
    if isinstance(source, LocalStorage) and isinstance(target, LocalStorage):
        nested = target.root == source.root or source.root in target.root.parents
    elif isinstance(source, S3Storage) and isinstance(target, S3Storage):
        inner = f"{source.prefix}/" if source.prefix else ""
        nested = source.bucket == target.bucket and (
            target.prefix == source.prefix or target.prefix.startswith(inner)
        )
    else:
        nested = False
    if nested:
        raise StorageError(
            f"{target.uri} is inside {source.uri}: the outputs would be read back as inputs. "
            "Choose an OUTPUT outside INPUT"
        )


def _hash_payload(options: RestoreOptions) -> dict:
    d = options.degradation
    free_form = options.synthetic and d.task == "inpaint" and d.mask != "square"
    hole = {"mask": d.mask} if free_form else {}  # square holes keep their old hashes
    return hole | {
        "config": options.config.identity(),
        "task": d.task,
        "seed": options.seed,
        "synthetic": options.synthetic,
        "fill_ratio": d.fill_ratio if options.synthetic else None,
        "sigma": d.sigma if options.synthetic else None,
        "masks": options.masks,
        "sr": (d.scale, d.kernel, d.degrade_kernel) if d.task == "sr" else None,
    }


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
        )
        commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def plan(options: RestoreOptions, source: Storage, target: Storage, done: dict[str, Record]):
    """Jobs to run, skip records for images the manifest shows finished, and failed records
    for names that cannot be restored (``name_problem``)."""
    names = source.list_images()
    if not names:
        raise StorageError(f"{source.uri}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    digest = config_hash(_hash_payload(options))
    masks = open_storage(options.masks, options.s3_endpoint_url) if options.masks else None
    truth = (
        open_storage(options.ground_truth, options.s3_endpoint_url)
        if options.ground_truth
        else None
    )
    jobs, skipped, refused = [], [], []
    for name in names:
        problem = name_problem(name, source, target, masks, truth)
        if problem is not None:  # this image fails alone, before any task
            refused.append(
                Record(
                    input=shown(name),
                    output="",
                    status="failed",
                    error=f"StorageError: {problem}",
                    config_hash=digest,
                    seed=image_seed(options.seed, name),
                )
            )
            continue
        previous = done.get(name)
        finished = previous is not None and previous.status == "ok"
        same = finished and previous.config_hash == digest and not options.overwrite
        if same and target.exists(name):
            skipped.append(dataclasses.replace(previous, status="skipped"))
            continue
        jobs.append(
            Job(
                name=name,
                input=source,
                output=target,
                config=options.config,
                degradation=options.degradation,
                seed=image_seed(options.seed, name),
                config_hash=digest,
                synthetic=options.synthetic,
                masks=masks,
                ground_truth=truth,
                max_pixels=options.max_pixels,
            )
        )
    return jobs, skipped, refused


def _failed_outcome(job: Job, err: BaseException) -> Outcome:
    cause = getattr(err, "cause", None) or err
    message = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    record = Record(
        input=job.name,
        output=job.output.join(job.name),
        status="failed",
        error=message,
        config_hash=job.config_hash,
        seed=job.seed,
    )
    return Outcome(record=record)


class Progress:
    """done / failed / remaining / items per minute, on a tqdm bar (ETA included)."""

    def __init__(self, total: int, enabled: bool, desc: str = "restore", unit: str = "img") -> None:
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
        )
        self.start, self.failed = time.perf_counter(), 0

    def advance(self, failed: bool) -> None:
        self.failed += failed
        self.bar.update(1)
        minutes = (time.perf_counter() - self.start) / 60
        self.bar.set_postfix(
            failed=self.failed,
            remaining=self.bar.total - self.bar.n,
            per_min=f"{self.bar.n / max(minutes, 1e-9):.2f}",
        )

    def close(self) -> None:
        self.bar.close()


def packs_of(jobs: list[Job], per_task: int) -> list[list[Job]]:
    """The batch cut into tasks of ``per_task`` images, in listing order."""
    return [jobs[i : i + per_task] for i in range(0, len(jobs), max(1, per_task))]


def run_jobs(ray, jobs: list[Job], options: RestoreOptions, on_outcome) -> None:
    """Submit the jobs as Ray tasks (``--pack`` images each, fitted as one batched model;
    auto: one per task on CPUs, ``AUTO_GPU_TASK_IMAGES`` on GPUs, packed as ``auto_pack``
    decides) and hand each image's outcome to ``on_outcome`` as its task ends."""
    resources = task_options(ray, options.cluster)
    threads = max(1, int(options.cluster.cpus_per_task))
    config = task_config(ray, options.cluster, options.config, resources["num_gpus"])
    pack = options.cluster.pack or None
    per_task = options.cluster.pack or (AUTO_GPU_TASK_IMAGES if resources["num_gpus"] else 1)
    jobs = [dataclasses.replace(j, config=config, threads=threads, pack=pack) for j in jobs]
    remote = ray.remote(process_pack).options(**resources)

    def on_done(task: list[Job], outcomes: list[Outcome] | None, error: Exception | None):
        for i, job in enumerate(task):
            on_outcome(job, outcomes[i] if error is None else _failed_outcome(job, error))

    submit_all(
        ray, remote, packs_of(jobs, per_task), in_flight_limit(ray, options.cluster), on_done
    )


def _batch_tracker(options: RestoreOptions, source: Storage, target: Storage) -> Tracker:
    """The batch's MLflow tracker, its parent run started (params: the config and the run)."""
    experiment = options.experiment or f"knitwork-{options.task}"
    tracker = Tracker(tracking_uri(), experiment, enabled=options.track)
    params = flatten(options.config.to_dict()) | {
        "task": options.task,
        "input": source.uri,
        "output": target.uri,
        "preset": options.preset,
        "seed": str(options.seed),
        "synthetic": str(options.synthetic),
        "code_version": code_version(),
    }
    tags = {"batch": f"{Path(source.uri).name or source.uri} → {target.uri}", "kind": "batch"}
    tracker.start(params, tags)
    return tracker


def _attempt(done: dict[str, Record], name: str) -> int:
    return done[name].attempt + 1 if name in done else 1


def restore(options: RestoreOptions) -> BatchSummary:
    """Restore every image under ``options.input`` into ``options.output``."""
    start = time.perf_counter()
    source = open_storage(options.input, options.s3_endpoint_url)
    target = open_storage(options.output, options.s3_endpoint_url)
    refuse_nested(source, target)
    manifest = Manifest(target)
    done = dict(manifest.records)  # a skipped image keeps its "ok" record in the manifest
    jobs, skipped, refused = plan(options, source, target, done)
    manifest.compact()  # folds a dead batch's journal in; a wrong output fails here, unfitted
    summary = BatchSummary()
    tracker = _batch_tracker(options, source, target)
    summary.parent_run_id = tracker.parent_id
    results: dict[str, Record] = {}
    for record in refused:
        record.attempt = _attempt(done, record.input)
        results[record.input] = record
        manifest.add(record)
        print(f"failed: {record.input}: {record.error}", file=sys.stderr)
    summary.recorded_late = record_untracked(tracker, target, skipped, manifest)
    progress = Progress(len(jobs), options.progress)

    def on_outcome(job: Job, outcome: Outcome) -> None:
        record = outcome.record
        image_params = {
            "image": job.name,
            "seed": str(job.seed),
            "height": str(outcome.size[0]),
            "width": str(outcome.size[1]),
        }
        record.mlflow_run_id = tracker.log_image(job.name, image_params, outcome)
        record.tracked = record.mlflow_run_id is not None
        record.attempt = _attempt(done, job.name)
        results[job.name] = record
        manifest.add(record)
        progress.advance(record.status == "failed")

    try:
        if jobs:
            with connect(options.cluster) as ray:
                run_jobs(ray, jobs, options, on_outcome)
    except BaseException as err:  # an aborted batch: its manifest and parent run are closed
        manifest.compact()
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        tracker.finish({}, {}, failed=True, status=status)
        raise
    finally:
        progress.close()
    order = {r.input: r for r in skipped} | results
    summary.records = [order[n] for n in sorted(order)]
    summary.seconds = time.perf_counter() - start
    data = manifest.compact()
    tracker.finish(aggregate(summary), {MANIFEST_NAME: data}, failed=summary.exit_code != 0)
    summary.tracked = tracker.enabled and summary.parent_run_id is not None
    return summary


def record_untracked(tracker: Tracker, target: Storage, skipped, manifest: Manifest) -> int:
    """Record in MLflow the finished images an earlier run could not (``tracked: false``): their
    metrics and restored image, under this batch. Returns how many were recorded."""
    if not tracker.enabled or tracker.parent_id is None:
        return 0
    late = 0
    for record in skipped:
        if record.tracked:
            continue
        try:
            artifact = {f"restored{Path(record.input).suffix}": target.read(record.input)}
        except StorageError:
            artifact = {}
        params = {"image": record.input, "seed": str(record.seed), "recorded_late": "true"}
        outcome = Outcome(record=dataclasses.replace(record, status="ok"), artifacts=artifact)
        run_id = tracker.log_image(record.input, params, outcome)
        if run_id is not None:
            late += 1
            record.mlflow_run_id, record.tracked = run_id, True
            manifest.add(dataclasses.replace(record, status="ok"))
    if late:
        print(f"recorded {late} finished image(s) in MLflow that an earlier run could not")
    return late
