"""Process-wide defaults, set here and nowhere else (library code never changes them).

Applied by ``knitwork_cli.main`` before a command runs:

- MLflow clients (every command that records or reads runs), unless already set:
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=20`` (a tracking server
  that is down costs seconds, not minutes, before the run goes on unrecorded) and
  ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` (no progress bars from artifact downloads).
- A quiet console (unless ``--verbose`` or already set): ``MLFLOW_LOGGING_LEVEL=WARNING``, so
  MLflow prints no INFO lines (database migrations, a "View run" link per image); the command's
  progress bar, warnings and summary remain. For the Ray commands, the level of
  ``pipeline.cluster.RAY_CONSOLE``: WARNING, or INFO with ``--verbose``, for which `connect`
  shows Ray's INFO lines ("Started a local Ray instance") and its raylets' messages ("(raylet)
  A worker died or was killed while executing a task ...", "Task ... failed. There are 2
  retries remaining ...", with tracebacks), which Ray otherwise prints into the command's
  output whenever a worker is lost or a task retried.
- Ray Tune (``knitwork tune``), unless already set: ``RAY_AIR_NEW_OUTPUT=0`` and
  ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0`` (Tune's console reporter off:
  the command prints one line per ended trial); ``RAY_LOGGER_LEVEL=warning`` (the processes of
  the local cluster log no INFO lines, among them the runtime-env agent's, which would write
  the AWS secret key Tune passes to each trial into the session's logs); the ``ray.tune`` and
  ``optuna`` loggers at WARNING.
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
- S3 credentials in the endpoint URL (``knitwork tune``, `s3_credentials_to_environment`):
  ``--s3-endpoint-url`` (else ``AWS_ENDPOINT_URL``) ``http://KEY:SECRET@host:port`` puts KEY
  and SECRET (URL-decoded) into ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` before Ray
  starts, so that pyarrow (and the workers of the local cluster, which inherit them) read them
  from AWS's default chain: Ray Tune pickles its storage filesystem into its state files
  (tuner.pkl, experiment_state-*.json), and a filesystem built with explicit keys would store
  the secret there; one built without them pickles none. The URL, which names these keys for
  this endpoint, wins over the environment: a different pair there is replaced for this
  command, with a warning naming no key; ``AWS_SESSION_TOKEN`` (and the older
  ``AWS_SECURITY_TOKEN``), which would belong to another pair, is dropped. On a cluster joined
  by ``--address``, Ray Tune itself passes these variables to each trial in its runtime env.
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
    # Ray Tune copies AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the driver's environment
    # into every trial's runtime env, and Ray's runtime-env agent logs each runtime env it
    # creates at INFO (session_*/logs/runtime_env_agent.log): at WARNING it logs none. Read
    # by the processes of the local cluster the command starts (not by a joined cluster's).
    "RAY_LOGGER_LEVEL": "warning",
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
        from pipeline.cluster import RAY_CONSOLE, ClusterOptions, required_environment

        os.environ.update(required_environment(ClusterOptions(address=address)))
        RAY_CONSOLE.setLevel(logging.INFO if verbose else logging.WARNING)


def s3_credentials_to_environment(endpoint: str | None) -> str | None:
    """Move the credentials of the S3 endpoint URL (``endpoint``, else ``AWS_ENDPOINT_URL``)
    into AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, for AWS's default chain (see the module's
    docstring). Returns a warning to print when that replaced a different pair, else None."""
    from tune.s3 import url_credentials

    credentials = url_credentials(endpoint or os.environ.get("AWS_ENDPOINT_URL") or "")
    if credentials is None:  # none, or not a URL: the storage says so, naming the option
        return None
    key, secret = credentials
    had = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if had == (key, secret):
        return None
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = key, secret
    for token in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):  # a token of another pair
        os.environ.pop(token, None)
    if not any(had):
        return None
    return (
        "warning: the S3 endpoint URL carries credentials that differ from "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: using the URL's for this command"
    )
