"""`knitwork bench quality`, the driver side: plan the rows, run them as Ray tasks, record them
in MLflow and ``OUTPUT/rows.jsonl``, print the table, write ``{"rows": [...]}`` JSON.

The tables it prints are pure functions of the rows, in ``pipeline.bench_tables``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

from knitwork.config import Config
from knitwork.io import DEFAULT_MAX_PIXELS, atomic_file
from pipeline.bench import BenchItem, RowOutcome, failed_row, pack_items, plan_items, run_task
from pipeline.bench_rows import ROWS_NAME, parse_rows, render_rows, row_key
from pipeline.bench_suites import (
    SUITES,
    Setting,
    default_methods,
    denoise_settings,
    is_neural,
    methods_of,
    neural_config,
    suite_task,
)
from pipeline.bench_tables import SCORES, means_metrics, row_order
from pipeline.cluster import (
    ClusterOptions,
    connect,
    in_flight_limit,
    submit_all,
    task_config,
    task_options,
)
from pipeline.driver import (
    AUTO_GPU_TASK_IMAGES,
    Progress,
    code_version,
    image_seed,
    name_problem,
    refuse_nested,
    shown,
)
from pipeline.storage import IMAGE_EXTENSIONS, StorageError, open_storage
from pipeline.tracking import Tracker, flatten, tracking_uri


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    suite: str  # inpaint, denoise, sr, ablation-inpaint or ablation-denoise
    images: str  # clean images: folder or s3:// URI
    output: str  # rows.jsonl and the restored images
    config: Config  # the Knitwork's; the MLP baseline (as_baseline) and the ablation's stages
    # (knitwork.ablation) derive from it, on the same budget
    preset: str = ""
    max_side: int | None = None  # images downscaled to this longest side first
    seed: int = 0  # base seed of the degradations and fits
    seeds: int = 1  # repeats per (image, setting): repeat r seeds with the image's seed + r
    methods: tuple[str, ...] | None = None  # None: every method of the suite but DIP
    dip_steps: int | None = None  # DIP's steps; None: its published schedule's
    settings: tuple[str, ...] | None = None  # None: every setting of the suite
    sigmas: tuple[float, ...] | None = None  # denoise: noise levels instead of 10, 20, 40
    centre_crop: int | None = None  # after max_side, keep each image's central N×N
    every: int = 1  # only every K-th image of the sorted list (a fixed subset)
    json_path: str | None = None
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    experiment: str | None = None
    s3_endpoint_url: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True
    track: bool = True


@dataclass(kw_only=True)
class BenchSummary:
    rows: list[dict] = field(default_factory=list)  # every row of this bench, done or not
    ran: int = 0  # rows computed by this run (the others were already in rows.jsonl)
    parent_run_id: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _methods(options: BenchOptions) -> tuple[str, ...]:
    if options.suite not in SUITES:
        raise ValueError(f"--suite must be one of {', '.join(SUITES)}; got {options.suite!r}")
    known = methods_of(options.suite)
    chosen = options.methods or default_methods(options.suite, options.config)
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)} for {options.suite}; "
            f"choose from {', '.join(known)}"
        )
    for method in filter(is_neural, chosen):
        neural_config(options.config, method)  # a stage the preset cannot make fails here
    if options.dip_steps is not None and options.dip_steps < 1:
        raise ValueError(f"--dip-steps must be ≥ 1; got {options.dip_steps}")
    return tuple(chosen)


def _settings(options: BenchOptions) -> tuple[Setting, ...]:
    suite = SUITES[options.suite]
    if options.sigmas is not None:
        if suite_task(options.suite) != "denoise":
            raise ValueError(
                "--sigmas is for the denoise suite only (and ablation-denoise), "
                f"not {options.suite}"
            )
        suite = denoise_settings(options.sigmas)
    known = {s.name: s for s in suite}
    chosen = options.settings or tuple(known)
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for {options.suite}; "
            f"choose from {', '.join(known)}"
        )
    return tuple(known[s] for s in chosen)


def _check_subset(options: BenchOptions) -> None:
    checked = (("--centre-crop", options.centre_crop), ("--every", options.every))
    for flag, value in (*checked, ("--seeds", options.seeds)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a whole number ≥ 1; got {value}")


def _read_rows(target) -> dict:
    if not target.exists(ROWS_NAME):
        return {}
    return parse_rows(target.read(ROWS_NAME).decode("utf-8"), target.join(ROWS_NAME))


class _Recorder:
    """Writes each outcome to rows.jsonl (atomically, all rows) and to an MLflow child run."""

    def __init__(self, tracker: Tracker, target, rows: dict, progress: Progress) -> None:
        self.tracker, self.target, self.rows, self.progress = tracker, target, rows, progress
        self.ran = 0

    def __call__(self, task: list[BenchItem], per_item: list[list[RowOutcome]] | None, error):
        if error is not None:
            cause = getattr(error, "cause", None) or error
            per_item = [[failed_row(item, m, cause) for m in item.methods] for item in task]
        outcomes = [outcome for item_outcomes in per_item for outcome in item_outcomes]
        for outcome in outcomes:
            row = outcome.row
            tags = {k: str(row[k]) for k in ("suite", "method", "setting", "image", "repeat")}
            kept = ("seed", "max_side", "centre_crop", "params", "config_hash")
            params = tags | {k: str(row.get(k)) for k in kept}
            metrics = {k: row[k] for k in SCORES if row.get(k) is not None}
            again = f" repeat {row['repeat']}" if row["repeat"] else ""
            row["mlflow_run_id"] = self.tracker.log_child(
                f"{row['method']} {row['setting']} {row['image']}{again}",
                tags,
                params,
                outcome.history,
                metrics,
                outcome.artifacts,
                ok=row["status"] == "ok",
            )
            self.rows[row_key(row)] = row
            self.ran += 1
        self.target.write(ROWS_NAME, render_rows(self.rows.values()))
        self.progress.advance(any(o.row["status"] != "ok" for o in outcomes))


def run_bench(options: BenchOptions) -> BenchSummary:
    """Run the suite's protocol on every image under ``options.images``."""
    start = time.perf_counter()
    methods, settings = _methods(options), _settings(options)
    _check_subset(options)
    source = open_storage(options.images, options.s3_endpoint_url)
    target = open_storage(options.output, options.s3_endpoint_url)
    refuse_nested(source, target)
    names = source.list_images()[:: options.every]  # sorted, so a fixed subset
    if not names:
        raise StorageError(f"{source.uri}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    rows = _read_rows(target)
    # a name that is not UTF-8 or would leave its folder fails alone, before any task
    refused = {n: p for n in names if (p := name_problem(n, source, target)) is not None}
    names = [n for n in names if n not in refused]
    seeds = {n: image_seed(options.seed, n) for n in names}
    tracker = Tracker(tracking_uri(), options.experiment or "knitwork-bench", options.track)
    summary = BenchSummary()
    summary.parent_run_id = tracker.start(
        flatten(options.config.to_dict())
        | {
            "suite": options.suite,
            "images": source.uri,
            "output": target.uri,
            "preset": options.preset,
            "max_side": str(options.max_side),
            "centre_crop": str(options.centre_crop),
            "every": str(options.every),
            "seed": str(options.seed),
            "seeds": str(options.seeds),
            "methods": ",".join(methods),
            "settings": ",".join(s.name for s in settings),
            "code_version": code_version(),
        },
        {"kind": "bench", "suite": options.suite, "images": source.uri},
    )
    recorder = _Recorder(tracker, target, rows, None)
    with connect(options.cluster) as ray:
        resources = task_options(ray, options.cluster)
        base = BenchItem(
            suite=options.suite,
            source=source,
            output=target,
            max_side=options.max_side,
            centre_crop=options.centre_crop,
            config=task_config(ray, options.cluster, options.config, resources["num_gpus"]),
            max_pixels=options.max_pixels,
            threads=max(1, int(options.cluster.cpus_per_task)),
            dip_steps=options.dip_steps,
        )
        per_task = options.cluster.pack or (AUTO_GPU_TASK_IMAGES if resources["num_gpus"] else 1)
        base = replace(base, pack=options.cluster.pack or None)
        items = plan_items(base, names, methods, settings, seeds, rows, options.seeds)
        tasks = pack_items(items, per_task)
        desc = f"bench {options.suite}"
        progress = Progress(len(tasks) + len(refused), options.progress, desc=desc, unit="task")
        recorder.progress = progress
        for name, problem in refused.items():
            _refuse(recorder, base, shown(name), problem, methods, settings, options.seeds)
        try:
            if tasks:
                remote = ray.remote(run_task).options(**resources)
                limit = in_flight_limit(ray, options.cluster)
                submit_all(ray, remote, tasks, limit, recorder)
        finally:
            progress.close()
    shown_names = names + [shown(n) for n in refused]
    wanted = {
        (m, s.name, n, r)
        for m in methods
        for s in settings
        for n in shown_names
        for r in range(options.seeds)
    }
    order = row_order(options.suite, [s.name for s in settings])
    summary.rows = sorted((r for k, r in rows.items() if k in wanted), key=order)
    summary.ran, summary.seconds = recorder.ran, time.perf_counter() - start
    target.write(ROWS_NAME, render_rows(rows.values()))
    tracker.finish(
        means_metrics(summary.rows), {ROWS_NAME: render_rows(summary.rows)}, summary.failed > 0
    )
    if options.json_path:
        write_json(options.json_path, summary.rows)
    return summary


def _refuse(
    recorder, base: BenchItem, name: str, problem: str, methods, settings, repeats: int
) -> None:
    """Failed rows (every method, setting and repeat) for an image whose name cannot be used."""
    unscored = replace(base, image=name, methods=methods, digests=dict.fromkeys(methods, ""))
    items = [replace(unscored, setting=s, repeat=r) for s in settings for r in range(repeats)]
    error = ValueError(problem)
    recorder(items, [[failed_row(item, m, error) for m in methods] for item in items], None)


def write_json(path: str, rows: list[dict]) -> None:
    with atomic_file(path) as handle:
        handle.write(json.dumps({"rows": rows}, indent=1, allow_nan=False).encode("utf-8"))
