"""Process-wide defaults, set here and nowhere else (library code never changes them).

Applied by ``knitwork_cli.main`` before a command runs:

- MLflow clients (every command that records or reads runs), unless already set:
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=20`` (a tracking server
  that is down costs seconds, not minutes, before the run goes on unrecorded) and
  ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` (no progress bars from artifact downloads).
- A quiet console (unless ``--verbose`` or already set): ``MLFLOW_LOGGING_LEVEL=WARNING``, so
  MLflow prints no INFO lines (database migrations, a "View run" link per image); the command's
  progress bar, warnings and summary remain.
- Ray Tune (``knitwork tune``), unless already set: ``RAY_AIR_NEW_OUTPUT=0`` and
  ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0`` (Tune's console reporter off:
  the command prints one line per ended trial); the ``ray.tune`` and ``optuna`` loggers at
  WARNING.
- Ray (``restore``, ``bench``, ``tune``), before Ray is imported (it reads these then), from
  ``pipeline.cluster.required_environment``:
  * without ``--address`` or ``RAY_ADDRESS``, for the local cluster the command starts and
    stops: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (every listener on 127.0.0.1 only),
    ``RAY_AUTH_MODE=disabled`` (no token file written under ~/.ray: nothing outside this
    machine can reach the cluster) and ``RAY_USAGE_STATS_ENABLED=0``, forced whatever the
    user's environment says;
  * joining a cluster on this machine (a 127.0.0.1/localhost address, or ``auto``): only
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, without which Ray rewrites 127.0.0.1 to the
    machine's network address and cannot connect;
  * joining any other cluster: nothing; the user's own settings (auth included) apply.
"""

from __future__ import annotations

import logging
import os

MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
TUNE_DEFAULTS = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
QUIET_LOGGERS = ("ray.tune", "optuna")
RAY_COMMANDS = ("restore", "bench", "tune")


def apply(command: str, address: str | None, verbose: bool = False) -> None:
    """Set the defaults ``command`` needs; ``address`` is its --address option."""
    for key, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if command == "tune":
        for key, value in TUNE_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    if command in RAY_COMMANDS:
        from pipeline.cluster import ClusterOptions, required_environment

        os.environ.update(required_environment(ClusterOptions(address=address)))
