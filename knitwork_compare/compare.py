"""Gather MLflow runs and compare them: the params that differ, the metrics with the best marked.

Each argument is an experiment name or a run id; a parent run (a batch, a search) stands for
itself and its child runs, and no argument means every experiment of the store. A child run
sees its parent's params under its own, so an image's run carries its batch's configuration.
Nothing here writes to the tracking store, and nothing is specific to one command: any params,
metrics and tags are compared.

Best values: a metric whose name contains one of ``HIGHER_IS_BETTER`` is best at its maximum,
one containing ``LOWER_IS_BETTER`` at its minimum (the higher list is checked first); other
metrics, and ``reference_*`` ones (they score the degraded input, not the method), are shown
unmarked. Runs tagged with an image (tag ``image``) compete only with runs of the same image.

Imports nothing heavy at module level: mlflow is imported inside the functions that read the
store. The caller names the tracking store (``open_client(uri)``); nothing here reads or sets
process-wide settings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

GROUP_TAG = "image"  # runs of the same image are compared with each other
TAG_PREFIX = "tag:"  # user tags are compared like params, under this prefix
HIGHER_IS_BETTER = ("psnr", "ssim", "accuracy", "score", "per_minute", "per_second", "throughput")
LOWER_IS_BETTER = ("loss", "seconds", "time", "error", "mse", "mae", "lpips", "failed", "rss")
UNRANKED_PREFIXES = ("reference_", "mean_reference_")
HISTORY_PREFIXES = ("loss/", "train/")  # step-by-step metrics, drawn as curves
SYSTEM_TAG_PREFIX = "mlflow."  # MLflow's own tags, left out of a run's user tags
PAGE = 1000  # runs or experiments per search request (MLflow pages its searches)
LISTED_EXPERIMENTS = 20  # experiment names an "unknown target" error lists before "and N more"
SHORT_ID = 8  # characters of the run id that name a run without a run name


@dataclass(kw_only=True)
class RunRecord:
    """One MLflow run, flattened to what a comparison reads."""

    run_id: str
    name: str
    experiment: str
    status: str = "FINISHED"
    params: dict[str, str] = field(default_factory=dict)  # the parent's, then the run's own
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric
    tags: dict[str, str] = field(default_factory=dict)  # user tags (no mlflow.* ones)
    parent_id: str | None = None
    start_time: int = 0  # milliseconds since the epoch

    @property
    def group(self) -> str:
        """The image this run restores, when it says so (tag ``image``); else ''."""
        return self.tags.get(GROUP_TAG, "")

    def fields(self) -> dict[str, str]:
        """Params, then the user tags that say something the params and name do not."""
        shown = dict(self.params)
        for key, value in self.tags.items():
            if self.params.get(key) != value and value != self.name:
                shown[f"{TAG_PREFIX}{key}"] = value
        return shown


@dataclass(kw_only=True)
class Comparison:
    """Runs side by side: which fields differ, which metric values are best."""

    runs: list[RunRecord]
    differing: list[str]  # field keys whose values are not the same on every run
    identical: dict[str, str]  # field keys with one value everywhere (hidden in the table)
    metrics: list[str]  # every metric key, ranked metrics first
    best: dict[str, set[str]]  # metric key -> run ids holding the best value of their group
    source: str = ""  # the tracking URI the runs came from, password hidden

    def __post_init__(self) -> None:
        self._numbers = {run.run_id: i for i, run in enumerate(self.runs, 1)}

    def number(self, run: RunRecord) -> int:
        """The run's 1-based position, the ``#N`` used in every table and picture."""
        return self._numbers[run.run_id]

    def label(self, run: RunRecord) -> str:
        return f"#{self.number(run)} {run.name}"


def shown_uri(uri: str) -> str:
    """``uri`` fit to print: a password in it (``scheme://user:secret@host``) becomes ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def metric_direction(name: str) -> str | None:
    """'max' when higher is better, 'min' when lower is, None when the name does not say."""
    lowered = name.lower()
    if lowered.startswith(UNRANKED_PREFIXES):
        return None
    if any(word in lowered for word in HIGHER_IS_BETTER):
        return "max"
    if any(word in lowered for word in LOWER_IS_BETTER):
        return "min"
    return None


def _metric_order(name: str) -> tuple[int, str]:
    direction = metric_direction(name)
    history = name.startswith(HISTORY_PREFIXES)
    rank = 3 if history else {"max": 0, "min": 1, None: 2}[direction]
    return rank, name


def best_runs(runs: Sequence[RunRecord], metric: str) -> set[str]:
    """Ids of the runs with the best value of ``metric`` among runs of the same group. A group
    where fewer than two runs have the metric, or all have the same value, marks nobody."""
    direction = metric_direction(metric)
    if direction is None:
        return set()
    pick = max if direction == "max" else min
    groups: dict[str, list[tuple[str, float]]] = {}
    for run in runs:
        value = run.metrics.get(metric)
        if value is not None and math.isfinite(value):
            groups.setdefault(run.group, []).append((run.run_id, value))
    best: set[str] = set()
    for scored in groups.values():
        values = {v for _, v in scored}
        if len(scored) < 2 or len(values) < 2:
            continue
        top = pick(values)
        best |= {run_id for run_id, v in scored if v == top}
    return best


def metric_varies(runs: Sequence[RunRecord], metric: str) -> bool:
    """False when two or more runs have ``metric`` and all have the same value."""
    values = [run.metrics[metric] for run in runs if metric in run.metrics]
    return len(values) == 1 or len(set(values)) > 1


def build_comparison(runs: Sequence[RunRecord], source: str = "") -> Comparison:
    """Which fields differ across ``runs`` and which runs hold each metric's best value."""
    if not runs:
        raise ValueError("nothing to compare: no runs")
    fields = [run.fields() for run in runs]
    keys = sorted({key for f in fields for key in f})
    differing, identical = [], {}
    for key in keys:
        values = {f.get(key) for f in fields}
        if len(values) == 1:
            identical[key] = values.pop()
        else:
            differing.append(key)
    metrics = sorted({key for run in runs for key in run.metrics}, key=_metric_order)
    best = {key: best_runs(runs, key) for key in metrics}
    return Comparison(
        runs=list(runs),
        differing=differing,
        identical=identical,
        metrics=metrics,
        best=best,
        source=source,
    )


def as_number(text: str | None) -> float | None:
    """A param value as a finite float, or None ('1e-2' → 0.01, 'True' → None)."""
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def varying_numeric_params(comparison: Comparison) -> list[str]:
    """Differing params that are numbers on every run that has them and take two or more
    values among runs of one group (a per-image seed, constant per image, is left out)."""
    chosen = []
    for key in comparison.differing:
        if key.startswith(TAG_PREFIX):
            continue
        by_group: dict[str, set[float]] = {}
        numeric = True
        for run in comparison.runs:
            text = run.params.get(key)
            if text is None:
                continue
            number = as_number(text)
            numeric = numeric and number is not None
            by_group.setdefault(run.group, set()).add(number)
        if numeric and any(len(v) > 1 for v in by_group.values()):
            chosen.append(key)
    return chosen


# ---- reading the tracking store (MlflowClient) -------------------------------------------


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on the tracking store ``uri`` (e.g. ``sqlite:///mlflow.db``)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _parent_tag() -> str:
    """The tag MLflow puts on a child run, holding its parent's run id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    return MLFLOW_PARENT_RUN_ID


def _search(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiments(client: Any) -> list[Any]:
    found, token = [], None
    while True:
        page = client.search_experiments(max_results=PAGE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _unknown(client: Any, target: str) -> ValueError:
    names = sorted(e.name for e in _experiments(client))
    more = len(names) - LISTED_EXPERIMENTS
    listed = ", ".join(names[:LISTED_EXPERIMENTS]) + (f" and {more} more" if more > 0 else "")
    return ValueError(
        f"{target!r} is neither an experiment nor a run id in the tracking store "
        f"{shown_uri(client.tracking_uri)}. Experiments there: {listed or 'none'}. "
        "`knitwork compare` with no argument compares every experiment; run ids are in "
        "`mlflow ui` or in a batch's _manifest.jsonl (mlflow_run_id)"
    )


def _resolve(client: Any, target: str) -> list[Any]:
    """An experiment's runs, or a run and its children."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(target)
    if experiment is not None:
        return _search(client, [experiment.experiment_id])
    try:
        run = client.get_run(target)
    except MlflowException:
        raise _unknown(client, target) from None
    children = _search(client, [run.info.experiment_id], f"tags.{_parent_tag()} = '{target}'")
    return [run, *children]


def _record(run: Any, experiment: str, parent_params: dict[str, str]) -> RunRecord:
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:SHORT_ID],
        experiment=experiment,
        status=run.info.status,
        params=parent_params | dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: v for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)},
        parent_id=tags.get(_parent_tag()),
        start_time=run.info.start_time or 0,
    )


def _ordered(records: list[RunRecord]) -> list[RunRecord]:
    """Parents by start time, each followed by its children by name (depth first)."""
    ids = {r.run_id for r in records}
    children: dict[str | None, list[RunRecord]] = {}
    for record in records:
        parent = record.parent_id if record.parent_id in ids else None
        children.setdefault(parent, []).append(record)
    ordered: list[RunRecord] = []

    def emit(parent: str | None) -> None:
        kids = children.get(parent, [])
        kids.sort(
            key=lambda r: (r.start_time, r.name) if parent is None else (r.name, r.start_time)
        )
        for kid in kids:
            ordered.append(kid)
            emit(kid.run_id)

    emit(None)
    return ordered


def gather_runs(client: Any, targets: Iterable[str] = ()) -> list[RunRecord]:
    """Every run named by ``targets`` (experiment names or run ids; none: the whole store),
    parents first and each followed by its children."""
    targets = list(targets)
    if targets:
        raw = [run for target in targets for run in _resolve(client, target)]
    else:
        ids = [e.experiment_id for e in _experiments(client)]
        raw = _search(client, ids) if ids else []
    unique = list({run.info.run_id: run for run in raw}.values())
    if not unique:
        store = f"the tracking store {shown_uri(client.tracking_uri)}"
        where = ", ".join(targets) if targets else store
        raise ValueError(
            f"no runs in {where}: record some first (e.g. `knitwork restore`), or check "
            "MLFLOW_TRACKING_URI"
        )
    names: dict[str, str] = {}
    parents: dict[str, dict[str, str]] = {run.info.run_id: dict(run.data.params) for run in unique}
    records = []
    for run in unique:
        experiment_id = run.info.experiment_id
        if experiment_id not in names:
            names[experiment_id] = client.get_experiment(experiment_id).name
        parent_id = run.data.tags.get(_parent_tag())
        inherited = _parent_params(client, parent_id, parents) if parent_id else {}
        records.append(_record(run, names[experiment_id], inherited))
    return _ordered(records)


def _parent_params(client: Any, parent_id: str, known: dict[str, dict[str, str]]) -> dict:
    """The parent's params (cached), or {} when the parent is gone."""
    from mlflow.exceptions import MlflowException

    if parent_id not in known:
        try:
            known[parent_id] = dict(client.get_run(parent_id).data.params)
        except MlflowException:
            known[parent_id] = {}
    return known[parent_id]
