"""Ray for the batch commands: connecting, sizing tasks, and bounded submission.

`connect` joins the cluster named by ``--address`` (or RAY_ADDRESS), or else starts a local
cluster of this machine that listens on 127.0.0.1 only; it never joins a cluster merely because
Ray's temp dir names one; Ray's own console messages on the driver follow the level of the
`RAY_CONSOLE` logger. `task_options` and `in_flight_limit` size the tasks for the cluster
found, and `submit_all` runs them with a bounded number in flight.

Ray is imported only inside the functions: Ray reads part of its environment when it is first
imported (see `local_cluster_environment`), which the entry layer sets up before that.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from knitwork.config import Config
from knitwork.fields import parse_size
from pipeline.storage import StorageError

LOOPBACK_IP = "127.0.0.1"  # the only address a local cluster listens on
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # object store of a local cluster (Ray's default: 30% RAM)
PROBE_SECONDS = 5.0  # how long a named cluster's address may take to accept a TCP connection
WAIT_SECONDS = 2.0  # each ray.wait returns at least this often (progress bars refresh)
RESULT_SECONDS = 60.0  # ray.get of a finished task's result
START_HINT = "ray start --head --node-ip-address 127.0.0.1 --port 6379"
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Enabled for INFO (`knitwork --verbose` sets it so): Ray's INFO lines and its raylets' messages
# on the driver's console. Otherwise (Python's default, WARNING) `connect` keeps them off.
RAY_CONSOLE = logging.getLogger(__name__)

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster cannot be reached, started or used as asked; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """Where the tasks run and what each one gets (the --address ... --max-retries options)."""

    address: str | None = None  # cluster to join: host:port, ray://host:port or "auto" (the
    # machine's running cluster); None: RAY_ADDRESS, else a new local loopback-only cluster
    cpus_per_task: float = 1.0  # CPUs reserved by each task (also its torch threads)
    gpus_per_task: float = 0.0  # GPUs per task, fractions allowed; asked only where present
    max_in_flight: int | None = None  # tasks submitted at once; None: 2 × the cluster's CPUs
    max_retries: int = 2  # retries of a task whose worker died or whose storage failed
    pack: int = 0  # images fitted together as one batched model per task or trial; 0: auto

    def __post_init__(self) -> None:
        if not self.cpus_per_task > 0:
            raise ValueError(f"--cpus-per-task must be > 0; got {self.cpus_per_task}")
        if not self.gpus_per_task >= 0:
            raise ValueError(f"--gpus-per-task must be >= 0; got {self.gpus_per_task}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"--max-in-flight must be >= 1 when given; got {self.max_in_flight}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0; got {self.max_retries}")
        if self.pack < 0:
            raise ValueError(f"--pack must be >= 1, or 0 for automatic; got {self.pack}")


def local_cluster_environment() -> dict[str, str]:
    """The environment variables a local cluster needs, set before ``ray`` is first imported.

    - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the node's address is 127.0.0.1, and then Ray's GCS
      server, raylet (node and object managers), agents and workers listen on 127.0.0.1 only.
      Without it Ray replaces 127.0.0.1 by the machine's address (even when given as
      ``_node_ip_address``) and listens on every interface. Read when ray is imported.
    - RAY_AUTH_MODE=disabled: no token authentication. Unset, Ray 2.60 turns it on for a new
      local cluster by writing RAY_AUTH_MODE=token into os.environ and a token into
      ~/.ray/auth_token; a loopback-only cluster needs neither.
    - RAY_USAGE_STATS_ENABLED=0: no usage reports (ray.init writes this into os.environ anyway).
    """
    return {LOOPBACK_VARIABLE: "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def required_environment(options: ClusterOptions) -> dict[str, str]:
    """What the entry layer must put in os.environ, before importing ray, for ``connect``:
    `local_cluster_environment` for a local cluster; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 to
    join a cluster at a loopback address or ``auto`` (else Ray rewrites 127.0.0.1 to this
    machine's address, where a loopback-only cluster does not listen); nothing otherwise."""
    address = named_address(options)
    return local_cluster_environment() if address is None else _join_environment(address)


def _join_environment(address: str) -> dict[str, str]:
    if address != "auto" and ("://" in address or not _is_loopback(_host_port(address)[0])):
        return {}
    return {LOOPBACK_VARIABLE: "0"}


def named_address(options: ClusterOptions) -> str | None:
    """The cluster to join: ``options.address``, else RAY_ADDRESS; None for a local cluster."""
    return options.address or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def connect(options: ClusterOptions) -> Iterator[ModuleType]:
    """The ``ray`` module, connected for the duration of the ``with`` block.

    Joins the named cluster (see `named_address`) and disconnects from it at the end, or starts
    a local loopback-only cluster sized to this machine and stops it at the end. When Ray is
    already initialised in this process, that connection is used and left as it is. Leaves
    os.environ as it found it (but for RAY_CLIENT_MODE=0, which importing ray writes).
    Raises ClusterError when the cluster cannot be reached or started, or the environment
    lacks what `required_environment` lists.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    address = named_address(options)
    verbose = RAY_CONSOLE.isEnabledFor(logging.INFO)
    shown = _show_raylet_messages(verbose)
    try:
        if address is None:
            _start_local(ray, verbose)
        else:
            _join(ray, address, "--address" if options.address else "RAY_ADDRESS", verbose)
        try:
            yield ray
        finally:
            ray.shutdown()
    finally:
        _show_raylet_messages(shown)


def _console(verbose: bool) -> dict[str, Any]:
    """ray.init keywords for the driver's console: no output of tasks (``log_to_driver``), and
    Ray's own logger at WARNING unless ``verbose`` (no "Started a local Ray instance")."""
    return {"log_to_driver": False, "logging_level": logging.INFO if verbose else logging.WARNING}


def _show_raylet_messages(shown: bool) -> bool:
    """Whether Ray prints its raylets' messages on the driver, set to ``shown``; returns what it
    was. Ray prints them ("A worker died or was killed while executing a task ...", "Task ...
    failed. There are 2 retries remaining ...", with the task's traceback) to stdout from a
    thread of its own, past its logger and ``log_to_driver``: its module flag, the one Ray's
    debugger turns off, is the only switch. What matters reaches the summary anyway (a task
    retried in time is an image restored; one that failed for good, a failed image with its
    error), so they are shown only when ``RAY_CONSOLE`` is enabled for INFO. Scoped to one
    connection: `connect` puts the flag back."""
    from ray._private import worker

    before = getattr(worker, "_worker_logs_enabled", True)
    if hasattr(worker, "_worker_logs_enabled"):
        worker._worker_logs_enabled = shown
    return before


def _start_local(ray: ModuleType, verbose: bool) -> None:
    missing = _missing_environment(local_cluster_environment())
    if missing:
        raise ClusterError(
            "refusing to start a local Ray cluster that could listen beyond 127.0.0.1: set "
            f"{' '.join(missing)} in the environment before ray is imported "
            "(pipeline.cluster.local_cluster_environment()), or name a cluster with --address"
        )
    try:
        _keeping_environment(
            ray.init,
            address="local",
            num_cpus=os.cpu_count() or 1,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            _node_ip_address=LOOPBACK_IP,
            **_console(verbose),
        )
    except Exception as err:
        ray.shutdown()  # whatever was started
        raise ClusterError(f"could not start a local Ray cluster: {err}") from err
    outside = sorted({node["NodeManagerAddress"] for node in ray.nodes()} - {LOOPBACK_IP})
    if outside:
        ray.shutdown()
        raise ClusterError(
            f"the local Ray cluster came up on {', '.join(outside)}, not {LOOPBACK_IP}: "
            f"stopped it. Was ray imported before {LOOPBACK_VARIABLE}=0 was set?"
        )


def _join(ray: ModuleType, address: str, source: str, verbose: bool) -> None:
    """ray.init on a named cluster, after checking, within PROBE_SECONDS, that it answers."""
    missing = _missing_environment(_join_environment(address))
    if missing:
        raise ClusterError(
            f"{source} {address} names a cluster on this machine's loopback: Ray replaces "
            f"127.0.0.1 by this machine's address unless {' '.join(missing)} is set before "
            "ray is imported"
        )
    target = _resolve(address, source)
    host, port = _host_port(urlsplit(target).netloc if "://" in target else target)
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            pass
    except OSError as err:
        raise ClusterError(
            _unreachable(address, source, f"connecting to {host}:{port}: {err}")
        ) from err
    try:
        _keeping_environment(ray.init, address=target, **_console(verbose))
    except Exception as err:
        ray.shutdown()
        raise ClusterError(_unreachable(address, source, f"ray.init({target!r}): {err}")) from err


def _resolve(address: str, source: str) -> str:
    """``auto`` as the host:port of the machine's running cluster; other addresses as given."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError) as err:
        raise ClusterError(_unreachable(address, source, f"looking for it: {err}")) from err
    if not found:
        raise ClusterError(_unreachable(address, source, "no running cluster was found"))
    return found


def _unreachable(address: str, source: str, tried: str) -> str:
    return (
        f"cannot reach the Ray cluster at {address} (from {source}); tried {tried}. Start one "
        f"with `{START_HINT}` and pass --address 127.0.0.1:6379, or drop --address (and unset "
        "RAY_ADDRESS) to run on a local cluster of this machine"
    )


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _missing_environment(wanted: dict[str, str]) -> list[str]:
    """``NAME=value`` for each wanted variable that is not so in os.environ (or was not when
    ray was imported)."""
    missing = [f"{k}={v}" for k, v in wanted.items() if os.environ.get(k) != v]
    if LOOPBACK_VARIABLE in wanted and f"{LOOPBACK_VARIABLE}=0" not in missing:
        from ray._private import ray_constants

        if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):  # read at ray's import
            missing.append(f"{LOOPBACK_VARIABLE}=0 (it was not set when ray was imported)")
    return missing


def _keeping_environment(call: Callable[..., Any], **kwargs: Any) -> Any:
    """``call(**kwargs)``, with os.environ put back as it was: ray.init writes
    PYTHONBREAKPOINT (and, for new clusters, RAY_USAGE_STATS_ENABLED) into it."""
    before = dict(os.environ)
    try:
        return call(**kwargs)
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _largest_node(ray: ModuleType, resource: str) -> float:
    return max(
        (node["Resources"].get(resource, 0.0) for node in ray.nodes() if node.get("Alive")),
        default=0.0,
    )


def gpus_for_tasks(ray: ModuleType, wanted: float) -> float:
    """``wanted`` GPUs per task when a node of the cluster has that many, else 0 with a
    warning on stderr (a task asking for missing GPUs would stay pending forever)."""
    have = _largest_node(ray, "GPU")
    if wanted > 0 and have < wanted:
        print(
            f"warning: {wanted:g} GPUs per task asked for, but the largest node of the cluster "
            f"has {have:g} GPUs: running on CPUs",
            file=sys.stderr,
        )
        return 0.0
    return wanted


def task_options(ray: ModuleType, options: ClusterOptions) -> dict[str, Any]:
    """Keywords for ``ray.remote(f).options(...)``: resources, and retries of lost workers and
    of storage errors. Raises ClusterError for tasks no node of the cluster could run."""
    largest = _largest_node(ray, "CPU")
    if options.cpus_per_task > largest:
        raise ClusterError(
            f"--cpus-per-task {options.cpus_per_task:g} asks {options.cpus_per_task:g} CPUs per "
            f"task but the largest node of the cluster has {largest:g}: such a task would never "
            f"start. Ask for at most {largest:g}"
        )
    return {
        "num_cpus": options.cpus_per_task,
        "num_gpus": gpus_for_tasks(ray, options.gpus_per_task),
        "max_retries": options.max_retries,
        "retry_exceptions": [StorageError],
    }


def in_flight_limit(ray: ModuleType, options: ClusterOptions) -> int:
    """Tasks to keep submitted at once: ``options.max_in_flight``, else 2 × the cluster's CPUs."""
    if options.max_in_flight is not None:
        return options.max_in_flight
    return max(1, int(ray.cluster_resources().get("CPU", 1) * 2))


def pin_to_cpu(config: Config, gpus: float) -> Config:
    """The config pinned to the CPU when the task gets no GPU (no CUDA probing on workers)."""
    if gpus == 0 and config.optim.device == "auto":
        return config.replace(optim=dataclasses.replace(config.optim, device="cpu"))
    return config


def task_config(ray: ModuleType, options: ClusterOptions, config: Config, gpus: float) -> Config:
    """The config a task runs: on the CPU without a GPU (`pin_to_cpu`), with its share of a
    node's memory (`share_memory`)."""
    return share_memory(ray, options, pin_to_cpu(config, gpus))


def share_memory(ray: ModuleType, options: ClusterOptions, config: Config) -> Config:
    """``optim.max_memory: auto`` as each task's share of a node: Ray's memory resource of the
    smallest node divided by the tasks it runs at once (its CPUs / --cpus-per-task), so that
    concurrent fits never count the same free memory twice. An explicit size is kept, unless
    no node has that much memory (ClusterError: the fits could not keep to it)."""
    if config.optim.max_memory != "auto":
        asked, largest = parse_size(config.optim.max_memory), _largest_node(ray, "memory")
        if largest > 0 and asked > largest:
            raise ClusterError(
                f"--max-memory {config.optim.max_memory} is more than any node of the cluster "
                f"has for tasks ({largest / 2**30:.1f} GiB on the largest): ask for at most "
                "that, or leave it to auto (each task's share of its node)"
            )
        return config
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    shares = [
        r.get("memory", 0.0) / max(1, int(r.get("CPU", 1.0) // options.cpus_per_task))
        for r in nodes
        if r.get("CPU", 0.0) >= options.cpus_per_task
    ]
    if not shares or min(shares) <= 0:
        return config
    size = f"{int(min(shares)) // 2**20}M"
    return config.replace(optim=dataclasses.replace(config.optim, max_memory=size))


def submit_all(
    ray: ModuleType,
    remote: Any,
    items: Iterable[T],
    limit: int,
    on_done: Callable[[T, Any, BaseException | None], None],
) -> None:
    """Run ``remote`` (a Ray remote function) on every item, at most ``limit`` in flight, and
    hand ``on_done(item, result, error)`` each result as it arrives (``error`` is the
    exception when the task failed for good: retries exhausted, worker lost)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    queue: deque[T] = deque(items)
    pending: dict[Any, T] = {}
    while queue or pending:
        while queue and len(pending) < limit:
            item = queue.popleft()
            pending[remote.remote(item)] = item
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
        for ref in ready:
            item = pending.pop(ref)
            try:
                result, error = ray.get(ref, timeout=RESULT_SECONDS), None
            except Exception as err:
                result, error = None, err
            on_done(item, result, error)
