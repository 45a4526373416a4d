"""MLflow records of a batch: one parent run per batch, one child run per image.

The driver is the only writer, from what workers return: no tracking store is hammered by
concurrent workers, and a tracking failure never costs a restoration. When the store cannot be
reached the tracker warns once, switches itself off, and the manifest says so.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline.storage import redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
LOG_BATCH = 500  # metrics per log_batch call (MLflow accepts up to 1000)
PARAMS_BATCH = 100  # params per log_batch call (MLflow accepts up to 100)
PARAM_LENGTH = 6000  # characters of a param value kept (MLflow's limit is 6000)
ERROR_LENGTH = 300  # characters of a tracking error quoted in the warning


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def metric_key(*parts: str) -> str:
    """An MLflow- and Tune-safe metric name: the parts joined by '/', every character MLflow
    refuses (anything but letters, digits, _ - . / and space) replaced by '_'."""
    return "/".join(re.sub(r"[^0-9A-Za-z_\-./ ]", "_", p) for p in parts)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts → ``a.b.c`` keys with string values (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)
    return flat


def _redacted(tags: dict[str, Any]) -> dict[str, Any]:
    """Tags fit to record: no password or secret key in a text value (``redact``)."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in tags.items()}


class Tracker:
    """Parent and child runs through ``MlflowClient``; every call degrades to a warning."""

    # what still happens when the store fails (subclasses say it for their own work)
    consequence = "restorations and the manifest are still written, but this batch is not recorded"

    def __init__(self, uri: str, experiment: str, enabled: bool = True) -> None:
        self.uri, self.experiment = uri, experiment
        self.enabled = enabled
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.problem: str | None = None
        self._client = None

    def _fail(self, what: str, err: Exception) -> None:
        first_line = redact((str(err).splitlines() or [""])[0])  # before a cut hides a URI
        self.problem = f"{redact(what)}: {type(err).__name__}: {first_line[:ERROR_LENGTH]}"
        warnings.warn(
            f"MLflow tracking at {redact(self.uri)} failed ({self.problem}); {self.consequence} "
            "in MLflow",
            stacklevel=2,
        )
        self.enabled = False

    def start(self, params: dict[str, str], tags: dict[str, str]) -> str | None:
        if not self.enabled:
            return None
        try:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            found = self._client.get_experiment_by_name(self.experiment)
            self.experiment_id = (
                found.experiment_id if found else self._client.create_experiment(self.experiment)
            )
            tags = _redacted(tags)
            run = self._client.create_run(self.experiment_id, tags=tags, run_name=tags.get("batch"))
            self.parent_id = run.info.run_id
            self._log_params(self.parent_id, params)
        except Exception as err:  # the store is down or misconfigured: never fatal
            self._fail("starting the batch run", err)
            return None
        return self.parent_id

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(v)[:PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_BATCH):
            self._client.log_batch(run_id, params=items[i : i + PARAMS_BATCH])

    def _log_metrics(self, run_id: str, history: list[dict[str, float]], final: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"loss/{k}" if k != "psnr" else "train/psnr", v, now, int(entry["step"]))
            for entry in history
            for k, v in entry.items()
            if k != "step"
        ]
        metrics += [
            Metric(k, float(v), now, 0)
            for k, v in final.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        for i in range(0, len(metrics), LOG_BATCH):
            self._client.log_batch(run_id, metrics=metrics[i : i + LOG_BATCH])

    def log_image(self, name: str, params: dict[str, str], outcome) -> str | None:
        """A child run for one restored image: params, loss history, metrics, artifacts."""
        record = outcome.record
        return self.log_child(
            name,
            {"image": name},
            params,
            outcome.history,
            record.metrics,
            outcome.artifacts,
            ok=record.status == "ok",
        )

    def log_child(
        self,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        history: list[dict[str, float]],
        metrics: dict,
        artifacts: dict[str, bytes],
        ok: bool = True,
    ) -> str | None:
        """A child run of the parent: tags, params, metric history, final metrics, files."""
        if not self.enabled:
            return None
        try:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            tags = {MLFLOW_PARENT_RUN_ID: self.parent_id} | _redacted(tags)
            run = self._client.create_run(self.experiment_id, tags=tags, run_name=run_name)
            run_id = run.info.run_id
            self._log_params(run_id, params)
            self._log_metrics(run_id, history, metrics)
            self._log_files(run_id, artifacts)
            self._client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
        except Exception as err:
            self._fail(f"recording {run_name}", err)
            return None
        return run_id

    def _log_files(self, run_id: str, files: dict[str, bytes]) -> None:
        if not files:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self._client.log_artifacts(run_id, tmp)

    def finish(
        self, metrics: dict[str, float], files: dict[str, bytes], failed: bool, status: str = ""
    ) -> None:
        """Close the parent run: FINISHED, FAILED, or ``status`` (KILLED for an interrupt)."""
        if not self.enabled or self.parent_id is None:
            return
        try:
            self._log_metrics(self.parent_id, [], metrics)
            self._log_files(self.parent_id, files)
            status = status or ("FAILED" if failed else "FINISHED")
            self._client.set_terminated(self.parent_id, status)
        except Exception as err:
            self._fail("finishing the batch run", err)
