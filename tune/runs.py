"""MLflow records of a search: one parent run per search, one child run per trial.

The driver is the only writer. A Tune callback logs each trial's objective as it is reported
(the live view); when the search ends every trial is reconciled from Tune's results: its run is
found or created, missing metric points are added, its restored images are attached and it is
closed. Runs are found again by tags (``search_id``, ``trial_id``), so a resumed search adds to
its runs and never duplicates them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray import tune

from knitwork.config import Config
from pipeline.tracking import LOG_BATCH, Tracker, flatten
from tune.space import apply_params

LOGGED = ("objective",)  # metric keys logged as history, beside every "psnr/<image>"


def _history_keys(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if (k in LOGGED or k.startswith("psnr/")) and isinstance(v, int | float) and v == v
    }


class SearchRuns(Tracker):
    """Parent and child runs of one search; every call degrades to a warning."""

    consequence = "the search goes on and writes its outputs, but it is not (fully) recorded"

    def __init__(self, uri: str, experiment: str, enabled: bool = True) -> None:
        super().__init__(uri, experiment, enabled)
        self._trial_runs: dict[str, str] = {}
        self._last_step: dict[str, int] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_client=None, _trial_runs={}, _last_step={})  # rebuilt where unpickled
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def open(
        self, parent_id: str | None, params: dict[str, str], tags: dict[str, str], name: str
    ) -> str | None:
        """The search's parent run: ``parent_id`` when it exists (a resumed search), else new."""
        if not self.enabled:
            return None
        try:
            if parent_id and self._exists(parent_id):
                self.parent_id = parent_id
                self.experiment_id = self.client.get_run(parent_id).info.experiment_id
                return parent_id
            found = self.client.get_experiment_by_name(self.experiment)
            self.experiment_id = (
                found.experiment_id if found else self.client.create_experiment(self.experiment)
            )
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
            self.parent_id = run.info.run_id
            self._log_params(self.parent_id, params)
        except Exception as err:  # the store is down or misconfigured: never fatal
            self._fail("starting the search run", err)
            return None
        return self.parent_id

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except Exception:
            return False
        return True

    def trial_run(self, trial_id: str, params: dict[str, str], tags: dict[str, str]):
        """The trial's child run, found by its tags or created with its params."""
        if not self.enabled or self.parent_id is None:
            return None
        if trial_id in self._trial_runs:
            return self._trial_runs[trial_id]
        try:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}' "
                f"and tags.trial_id = '{trial_id}'",
            )
            if found:
                run_id = found[0].info.run_id
                history = self.client.get_metric_history(run_id, "objective")
                self._last_step[trial_id] = max((m.step for m in history), default=-1)
            else:
                tags = tags | {MLFLOW_PARENT_RUN_ID: self.parent_id, "trial_id": trial_id}
                run_id = self.client.create_run(
                    self.experiment_id, tags=tags, run_name=trial_id
                ).info.run_id
                self._log_params(run_id, params)
        except Exception as err:
            self._fail(f"recording trial {trial_id}", err)
            return None
        self._trial_runs[trial_id] = run_id
        return run_id

    def log_history(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Metric points of reports not logged yet (by their ``step``)."""
        run_id = self._trial_runs.get(trial_id)
        if not self.enabled or run_id is None:
            return
        from mlflow.entities import Metric

        last = self._last_step.get(trial_id, -1)
        fresh = [r for r in rows if int(r.get("step", -1)) > last]
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, int(r["step"])) for r in fresh for k, v in _history_keys(r).items()
        ]
        try:
            for i in range(0, len(metrics), LOG_BATCH):
                self.client.log_batch(run_id, metrics=metrics[i : i + LOG_BATCH])
        except Exception as err:
            self._fail(f"logging trial {trial_id}", err)
            return
        if fresh:
            self._last_step[trial_id] = max(int(r["step"]) for r in fresh)

    def close_trial(
        self, trial_id: str, final: dict[str, float], files: dict[str, bytes], status: str
    ) -> None:
        """Final metrics, files and status of a trial's run, unless it is closed already."""
        run_id = self._trial_runs.get(trial_id)
        if not self.enabled or run_id is None:
            return
        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return
            self._log_final(run_id, final)
            self._log_files(run_id, files)
            self.client.set_tag(run_id, "status", status)
            self.client.set_terminated(run_id, "FAILED" if status == "error" else "FINISHED")
        except Exception as err:
            self._fail(f"closing trial {trial_id}", err)

    def _log_final(self, run_id: str, final: dict[str, float]) -> None:
        """Final values at the trial's last step (the objective's history is logged already)."""
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(final.get("steps_done", 0))
        metrics = [Metric(k, float(v), now, step) for k, v in final.items()]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def run_of(self, trial_id: str) -> str | None:
        return self._trial_runs.get(trial_id)

    def _log_files(self, run_id: str, files: dict[str, bytes]) -> None:
        """Artifacts by relative path (``restored/sub/a.png`` keeps its folders)."""
        if not files:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self.client.log_artifacts(run_id, tmp)

    def tag_parent(self, tags: dict[str, str]) -> None:
        if not self.enabled or self.parent_id is None:
            return
        try:
            for key, value in tags.items():
                self.client.set_tag(self.parent_id, key, value)
        except Exception as err:
            self._fail("tagging the search run", err)


class LiveRuns(tune.Callback):
    """On the driver: each report becomes a metric point of its trial's run, and each ended
    trial one short line on stderr (Tune's own reporter is switched off)."""

    def __init__(self, runs: SearchRuns, base: Config, tags: dict[str, str], total: int) -> None:
        self.runs, self.base, self.tags, self.total = runs, base, tags, total

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        params = trial_params(apply_params(self.base, trial.config).to_dict(), trial.trial_id)
        if self.runs.trial_run(trial.trial_id, params, self.tags):
            self.runs.log_history(trial.trial_id, [result])

    def _ended(self, trials, trial) -> str:
        ended = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        return f"[{len(ended | {trial.trial_id})} of {self.total} trials ended]"

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        r = trial.last_result
        step, steps, objective = r.get("step", 0), r.get("steps", 0), r.get("objective")
        how = "completed" if r.get("finished") else "stopped early (ASHA)"
        how = "diverged (non-finite loss)" if r.get("diverged") else how
        shown = f"{objective:.2f} dB" if isinstance(objective, float) else "–"
        print(
            f"trial {trial.trial_id}: {how} at step {step}/{steps}, objective {shown} "
            + self._ended(trials, trial),
            file=sys.stderr,
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(
            f"trial {trial.trial_id}: error (see {trial.path}) " + self._ended(trials, trial),
            file=sys.stderr,
            flush=True,
        )


def trial_params(config_dict: dict[str, Any], trial_id: str) -> dict[str, str]:
    """A trial run's MLflow params: its whole config, flattened, and its id."""
    return flatten(config_dict) | {"trial_id": trial_id}


def record_trials(runs: SearchRuns, grid, rows, base: Config, tags: dict[str, str]) -> None:
    """Every trial's run, complete: found or created, missing points, images, closed."""
    from tune.trial import checkpoint_images

    for result, row in zip(grid, rows, strict=True):
        config = apply_params(base, row.params).to_dict()
        if runs.trial_run(row.trial_id, trial_params(config, row.trial_id), tags) is None:
            continue
        frame = result.metrics_dataframe
        history = frame.to_dict("records") if frame is not None else []
        runs.log_history(row.trial_id, history)
        final = {"steps_done": row.steps_done, "seconds": row.seconds}
        runs.close_trial(row.trial_id, final, checkpoint_images(result.checkpoint), row.status)
