"""`knitwork bench quality`, the driver side: plan the rows, run them as Ray tasks, record them
in MLflow and ``OUTPUT/rows.jsonl``, print the table, write ``{"rows": [...]}`` JSON.

Report scripts reuse the pure functions: ``means`` (mean scores per setting and method),
``paired_summary`` (a method's score minus another's, paired over images: mean, paired SE,
wins, verdict) and ``table`` (the printed summary)."""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field, replace

from knitwork.config import Config
from knitwork.io import DEFAULT_MAX_PIXELS, atomic_file
from pipeline.bench import (
    ABLATION,
    KERNEL_SCORES,
    ROWS_NAME,
    SUITES,
    BenchItem,
    RowOutcome,
    Setting,
    denoise_settings,
    failed_row,
    is_neural,
    methods_of,
    neural_config,
    pack_items,
    parse_rows,
    plan_items,
    render_rows,
    row_key,
    run_task,
    suite_task,
)
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
from pipeline.tracking import Tracker, flatten, metric_key, tracking_uri

SCORES = (
    "psnr", "ssim", "psnr_hole", "ssim_hole", "psnr_raw", "ssim_raw", "seconds", *KERNEL_SCORES
)  # fmt: skip


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
    methods: tuple[str, ...] | None = None  # None: every method of the suite
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
    chosen = options.methods or known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)} for {options.suite}; "
            f"choose from {', '.join(known)}"
        )
    for method in filter(is_neural, chosen):
        neural_config(options.config, method)  # a stage the preset cannot make fails here
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
    order = _order(options.suite, [s.name for s in settings])
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


def _order(suite: str, settings: list[str]):
    def key(row: dict):
        setting, method = settings.index(row["setting"]), _rank(suite, row["method"])
        return setting, method, row["image"], row.get("repeat", 0)

    return key


def _rank(suite: str, method: str) -> int:
    methods = methods_of(suite)
    return methods.index(method) if method in methods else len(methods)


def write_json(path: str, rows: list[dict]) -> None:
    with atomic_file(path) as handle:
        handle.write(json.dumps({"rows": rows}, indent=1, allow_nan=False).encode("utf-8"))


def means(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (setting, method): the mean of each score over the images that succeeded."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["method"]), []).append(row)
    out = {}
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        out[key] = {"images": len(ok), "failed": len(group) - len(ok)}
        for score in SCORES:
            values = [r[score] for r in ok if r.get(score) is not None]
            out[key][score] = statistics.fmean(values) if values else None
    return out


def means_metrics(rows: list[dict]) -> dict[str, float]:
    return {
        metric_key("mean", score, method, setting): value
        for (setting, method), scores in means(rows).items()
        for score, value in scores.items()
        if value is not None and score in SCORES
    }


def table(rows: list[dict], suite: str) -> str:
    """Mean scores per setting and method (over images and repeats), settings in the rows'
    order; * marks each setting's best (hole PSNR for inpainting, PSNR otherwise). Raw: the
    paper's protocol, the whole raw output (``psnr_raw``, ``ssim_raw``). SR adds the mean
    learned kernel's error and the delta start's (``kernel_scores``). Then the paired
    differences of every suite (``paired_table``)."""
    key = paired_scores(suite)[0]
    stats = means(rows)
    kernels = suite == "sr"
    lines = [
        f"{'setting':12s} {'method':14s} {'PSNR':>7s} {'SSIM':>6s} {'hole PSNR':>9s} "
        f"{'hole SSIM':>9s} {'raw PSNR':>8s} {'raw SSIM':>8s} {'s/img':>7s} {'n':>3s}"
        + (f" {'kernel err':>10s} {'start':>6s}" if kernels else "")
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        here = {m: v for (s, m), v in stats.items() if s == setting}
        scored = [v[key] for v in here.values() if v[key] is not None]
        best = max(scored) if scored else None
        for method in sorted(here, key=lambda m: _rank(suite, m)):
            v = here[method]
            mark = "*" if best is not None and v[key] == best else " "
            lines.append(
                f"{setting:12s} {method:14s} {_f(v['psnr'])}{mark if key == 'psnr' else ' '}"
                f"{_f(v['ssim'], 6, 3)} {_f(v['psnr_hole'], 8)}{mark if key != 'psnr' else ' '}"
                f"{_f(v['ssim_hole'], 9, 3)} {_f(v['psnr_raw'], 8)} {_f(v['ssim_raw'], 8, 3)}"
                f" {_f(v['seconds'], 7, 1)} {v['images']:3d}"
                + (_kernel_columns(v) if kernels else "")
                + (f"  ({v['failed']} failed)" if v["failed"] else "")
            )
    comparison = paired_table(rows, suite)
    return "\n".join(lines + (["", comparison] if comparison else []))


def _kernel_columns(scores: dict) -> str:
    """SR: the mean kernel error and the delta start's (– where no kernel was learned)."""
    return f" {_f(scores['kernel_error'], 10, 3)} {_f(scores['kernel_error_start'], 6, 3)}"


@dataclass(frozen=True)
class Paired:
    """A − B over the images both have: mean, paired standard error, wins of A."""

    mean: float
    se: float | None  # std (n − 1) of the per-image differences / √n; None for one image
    wins: int  # images where A is higher
    n: int

    @property
    def verdict(self) -> str:
        """Ahead or behind only outside the paired SE, else "within SE" (one image has no SE:
        always within)."""
        if self.se is None or abs(self.mean) <= self.se:
            return "within SE"
        return "ahead" if self.mean > 0 else "behind"


def paired(a: dict[str, float], b: dict[str, float]) -> Paired | None:
    """``a`` − ``b`` (image → score) on their common images; None when they share none."""
    diffs = [a[image] - b[image] for image in sorted(a.keys() & b.keys())]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return Paired(statistics.fmean(diffs), se, sum(d > 0 for d in diffs), len(diffs))


# the scores compared pair by pair, the suite's primary one first
PAIRED_SCORES = {"inpaint": ("psnr_hole", "psnr"), "denoise": ("psnr",), "sr": ("psnr",)}
_LABELS = {"psnr": "PSNR", "psnr_hole": "hole PSNR", "psnr_raw": "raw PSNR"}


def paired_scores(suite: str) -> tuple[str, ...]:
    """The scores a suite's paired table compares, its primary one first."""
    return PAIRED_SCORES[suite_task(suite)]


@dataclass(frozen=True)
class Comparison:
    """``method``'s ``score`` minus ``other``'s in one setting, paired over images."""

    setting: str
    score: str  # a row field: psnr, psnr_hole, ...
    method: str  # the Knitwork, or in the ablation a stage
    other: str  # the method compared with, or the previous stage
    diff: Paired  # ``method`` − ``other``: mean, SE, wins, n, verdict


def paired_summary(rows: list[dict], suite: str, score: str) -> list[Comparison]:
    """Per setting (in the rows' order): the Knitwork minus each other method, or in an
    ablation suite each stage minus the previous stage present, on ``score``, paired over the
    images both restored; an image's value is its mean over the repeats both have."""
    values = _by_image(rows, score)
    found = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        present = sorted({m for s, m in values if s == setting}, key=lambda m: _rank(suite, m))
        for method, other in _pairs(suite, present):
            d = _paired_repeats(values[setting, method], values[setting, other])
            if d is not None:
                found.append(Comparison(setting, score, method, other, d))
    return found


def _by_image(rows: list[dict], score: str) -> dict[tuple[str, str], dict[str, dict]]:
    """(setting, method) → image → repeat → ``score``, of the rows that succeeded."""
    values: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get(score) is not None:
            images = values.setdefault((r["setting"], r["method"]), {})
            images.setdefault(r["image"], {})[r.get("repeat", 0)] = r[score]
    return values


def _pairs(suite: str, present: list[str]) -> list[tuple[str, str]]:
    if suite.startswith(ABLATION):
        return list(zip(present[1:], present[:-1], strict=True))
    return [("knitwork", m) for m in present if m != "knitwork"] if "knitwork" in present else []


def _paired_repeats(a: dict[str, dict], b: dict[str, dict]) -> Paired | None:
    """``paired`` on per-image means over the repeats both ``a`` and ``b`` have."""
    ours, theirs = {}, {}
    for image in a.keys() & b.keys():
        common = a[image].keys() & b[image].keys()
        if common:
            ours[image] = statistics.fmean(a[image][r] for r in common)
            theirs[image] = statistics.fmean(b[image][r] for r in common)
    return paired(ours, theirs)


def paired_table(rows: list[dict], suite: str) -> str:
    """``paired_summary`` of each of the suite's scores as text: mean difference, paired SE,
    wins k/n and the verdict. Empty when nothing pairs (no Knitwork row, one stage)."""
    lines = [
        f"{_LABELS.get(c.score, c.score):9s} {c.setting:12s} {c.method + ' − ' + c.other:28s} "
        f"{c.diff.mean:+7.2f} {_f(c.diff.se, 6)} {f'{c.diff.wins}/{c.diff.n}':>7s}  "
        f"{c.diff.verdict}"
        for score in paired_scores(suite)
        for c in paired_summary(rows, suite, score)
    ]
    if not lines:
        return ""
    what = "each stage − the previous one" if suite.startswith(ABLATION) else "knitwork − method"
    return "\n".join(
        [
            f"{what}, paired over images (an image's value: its mean over repeats)",
            "SE: std of the per-image differences / √n; wins: images ahead; ahead or behind "
            "only outside ± SE",
            f"{'score':9s} {'setting':12s} {'comparison':28s} {'Δ dB':>7s} {'SE':>6s} "
            f"{'wins':>7s}  verdict",
            *lines,
        ]
    )


def _f(value, width: int = 7, digits: int = 2) -> str:
    return f"{'–':>{width}s}" if value is None else f"{value:{width}.{digits}f}"
