"""A local stack on 127.0.0.1: an S3 endpoint, an MLflow tracking server and a Ray head.

`start_stack` starts the three as background processes (each in its own session), waits until
each answers, creates the bucket, and records them in a state folder: ``stack.json`` (what
runs where), ``NAME.pid``, ``NAME.log`` and ``env.sh`` (the settings a client exports).
`stop_stack` stops exactly those processes and `stack_status` says which still run.

The S3 endpoint is MinIO when a ``minio`` binary is on PATH (objects kept on disk under the
state folder), else moto's server (objects in memory only: gone when it stops). MLflow proxies
artifacts to ``s3://BUCKET/mlflow``, so its clients need no S3 credentials.

Each service starts in a session of its own, with ``KNITWORK_STACK_ID=<stack id>:<service>``
in its environment. Stopping signals only that session's process group, processes carrying
the mark, and their descendants (checked by start time against reused pids): never another Ray
cluster of the machine, never a process found by its name.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import psutil

from pipeline import processes, stack_commands
from pipeline.cluster import LOOPBACK_IP, local_cluster_environment
from pipeline.storage import redact, s3_client

DEFAULT_STATE = "out/stack"
DEFAULT_BUCKET = "knitwork"
READY_SECONDS = 120.0  # default wait for each service to answer
STOP_SECONDS = 40.0  # a Ray head's leader may take this long to stop (it drains ≤ 30 s)
GRACE_SECONDS = 10.0  # SIGTERM → SIGKILL for the other processes
MARKER = "KNITWORK_STACK_ID"
MLFLOW_SERVER_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner
STATE_FILE, ENV_FILE, LOCK_FILE = "stack.json", "env.sh", ".lock"
BUCKET_EXISTS = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")  # fine: the bucket is there
DETACHED = {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "start_new_session": True}
SERVICES = ("s3", "mlflow", "ray")  # start order; stopped in reverse

Say = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot be started, stopped or read as asked; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """What `knitwork stack up` starts (its options)."""

    state: Path = Path(DEFAULT_STATE)  # folder of pid files, logs, stack.json, env.sh
    s3: str = "auto"  # auto (minio if on PATH, else moto), minio or moto
    s3_port: int | None = None  # None: a free port
    mlflow_port: int | None = None
    ray_port: int | None = None  # the Ray head's GCS port (RAY_ADDRESS)
    bucket: str = DEFAULT_BUCKET  # created at start; MLflow's artifacts go to s3://BUCKET/mlflow
    num_cpus: int | None = None  # CPUs the Ray head offers; None: all of this machine's
    timeout: float = READY_SECONDS  # seconds each service may take to answer

    def __post_init__(self) -> None:
        if self.s3 not in ("auto", "minio", "moto"):
            raise ValueError(f"--s3 must be auto, minio or moto; got {self.s3!r}")
        if len(self.bucket) < 3:
            raise ValueError(f"--bucket {self.bucket!r}: S3 bucket names have >= 3 characters")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be > 0 seconds; got {self.timeout}")


@dataclass(frozen=True)
class Service:
    """One started process: its leader's pid and start time (to tell it from a reused pid)."""

    name: str  # s3, mlflow or ray
    kind: str  # moto, minio, mlflow or ray
    pid: int
    started: float  # the leader's create_time, as psutil reports it
    port: int  # the port it answers on
    address: str  # what clients use: http://127.0.0.1:PORT or 127.0.0.1:PORT (Ray)
    log: str


@dataclass(frozen=True)
class Stack:
    """What `start_stack` started, as recorded in STATE/stack.json."""

    id: str
    state: str
    bucket: str
    services: tuple[Service, ...]
    ports: tuple[int, ...]  # every port given to a service (Ray's internal ones included)
    ray_temp_dir: str
    ray_temp_owned: bool  # a folder made under /tmp (state path too long): removed at stop
    exports: tuple[str, ...]  # env.sh lines; secrets only as $VARIABLE references


def start_stack(options: StackOptions, say: Say) -> Stack:
    """Start the stack, or raise StackError (a stack already running from the state folder,
    a busy port, a service that did not come up: then whatever started is stopped again)."""
    state = options.state.expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    with _locked(state):
        _refuse_running(state)
        kind = _s3_kind(options.s3)
        try:
            stack = _launch(options, state, kind)
            _wait_ready(stack, options.timeout, say)
        except BaseException:  # Ctrl-C included: stop what the record says was started
            if (started := read_stack(state)) is not None:
                say("stopping what was started")
                _stop(started, say)
            raise
        (state / ENV_FILE).write_text("\n".join(stack.exports) + "\n")
        return stack


def stop_stack(state: Path, say: Say) -> Stack | None:
    """Stop what `start_stack` recorded in ``state`` and remove its pid files; None when
    nothing is recorded there. Raises StackError when a process outlives SIGKILL."""
    state = state.expanduser().resolve()
    if not (state / STATE_FILE).exists():
        return None
    with _locked(state):
        stack = read_stack(state)
        if stack is not None:
            _stop(stack, say)
        return stack


def stack_status(state: Path) -> tuple[Stack, list[tuple[Service, bool, bool]]] | None:
    """The recorded stack and, for each service, whether its process runs and whether its
    port answers; None when nothing is recorded in ``state``."""
    stack = read_stack(state.expanduser().resolve())
    if stack is None:
        return None
    return stack, [(s, _leader(s) is not None, processes.answers(s.port)) for s in stack.services]


def read_stack(state: Path) -> Stack | None:
    path = state / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        services = tuple(Service(**s) for s in data.pop("services"))
        return Stack(
            **data | {"ports": tuple(data["ports"]), "exports": tuple(data["exports"])},
            services=services,
        )
    except (ValueError, TypeError, KeyError) as err:
        raise StackError(
            f"{path} is unreadable ({err}): stop its processes by their pid "
            f"files in {state}, then delete {path}"
        ) from err


def _s3_kind(asked: str) -> str:
    if asked in ("auto", "minio") and shutil.which("minio"):
        return "minio"
    if asked == "minio":
        raise StackError("--s3 minio: no `minio` binary on PATH; install MinIO or use --s3 moto")
    if find_spec("moto") is None or find_spec("flask") is None:
        raise StackError(
            "no S3 server: put a `minio` binary on PATH, or install moto's server "
            "(pip install 'moto[server]')"
        )
    return "moto"


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    with (state / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `knitwork stack` command is working on {state}: wait for it to finish"
            ) from None
        yield


def _refuse_running(state: Path) -> None:
    stack = read_stack(state)
    if stack is None:
        return
    running = [s.name for s in stack.services if _leader(s) is not None]
    if running:
        raise StackError(
            f"a stack is already running from {state} ({', '.join(running)}): its settings are "
            f"in {state / ENV_FILE}; `knitwork stack status --state {state}` shows it, "
            f"`knitwork stack down --state {state}` stops it"
        )
    _remove_records(stack)  # a stale record: its processes are gone


def _ports(options: StackOptions) -> list[int]:
    """11 distinct ports: S3's, MLflow's and the Ray head's (as asked, else free ones), then
    free ones for Ray's six other listeners, MinIO's console and Ray's client server."""
    asked = {"--s3-port": options.s3_port, "--mlflow-port": options.mlflow_port}
    asked["--ray-port"] = options.ray_port
    held: list[socket.socket] = []
    try:
        for option, port in [*asked.items(), *[("", None)] * 8]:
            held.append(sock := socket.socket())
            try:
                sock.bind((LOOPBACK_IP, port or 0))
            except OSError as err:
                raise StackError(
                    f"{option} {port}: cannot listen on {LOOPBACK_IP}:{port} ({err}); "
                    f"choose another port or leave {option} out"
                ) from None
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def _launch(options: StackOptions, state: Path, s3_kind: str) -> Stack:
    ports = _ports(options)
    ray_temp, owned = stack_commands.ray_temp_dir(state)
    http = f"http://{LOOPBACK_IP}"
    addresses = dict(zip(SERVICES, (f"{http}:{ports[0]}", f"{http}:{ports[1]}"), strict=False))
    addresses["ray"] = f"{LOOPBACK_IP}:{ports[2]}"
    mlflow_args = (
        f"server --workers 1 --host {LOOPBACK_IP} --port {ports[1]} "
        f"--artifacts-destination s3://{options.bucket}/mlflow --backend-store-uri"
    )
    mlflow_db = f"sqlite:///{state / 'mlflow.db'}"
    commands = {
        "s3": stack_commands.s3_command(s3_kind, ports[0], ports[9], state),
        "mlflow": [sys.executable, "-m", "mlflow", *mlflow_args.split(), mlflow_db],
        "ray": stack_commands.ray_command(
            ports[2], ports[3:9], ports[10], ray_temp, options.num_cpus
        ),
    }
    settings = {  # beyond the S3 ones
        "s3": {},
        "mlflow": {"MLFLOW_S3_ENDPOINT_URL": addresses["s3"]} | MLFLOW_SERVER_ENVIRONMENT,
        "ray": local_cluster_environment() | {"MLFLOW_TRACKING_URI": addresses["mlflow"]},
    }
    exports = stack_commands.exports(s3_kind, addresses)
    stack_id, used = uuid.uuid4().hex[:12], tuple(ports[:9])
    stack = Stack(stack_id, str(state), options.bucket, (), used, ray_temp, owned, exports)
    dropped = ("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_", "RAY_ADDRESS")  # the user's settings
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    inherited |= stack_commands.s3_settings(s3_kind, addresses["s3"])
    kinds = {"s3": s3_kind, "mlflow": "mlflow", "ray": "ray"}
    for port, name in zip(ports, SERVICES, strict=False):
        env = inherited | settings[name] | {MARKER: f"{stack.id}:{name}"}
        pid, started, log = _spawn(name, commands[name], env, state)
        service = Service(name, kinds[name], pid, started, port, addresses[name], log)
        stack = dataclasses.replace(stack, services=(*stack.services, service))
        _write_record(stack)  # after each start, so that a crash of `up` leaves a record
    return stack


def _spawn(name: str, command: list[str], env: dict[str, str], state: Path) -> tuple:
    """Start ``command`` in a session of its own; its pid, start time and log file."""
    log = state / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=state, stdout=out, **DETACHED)
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid, psutil.Process(proc.pid).create_time(), str(log)


def _write_record(stack: Stack) -> None:
    path = Path(stack.state) / STATE_FILE
    path.with_suffix(".tmp").write_text(json.dumps(dataclasses.asdict(stack), indent=2) + "\n")
    path.with_suffix(".tmp").replace(path)


def _wait_ready(stack: Stack, timeout: float, say: Say) -> None:
    begin = time.monotonic()
    for service in stack.services:
        while not _ready(stack, service):
            if _leader(service) is None:
                raise StackError(
                    f"{service.name} ({service.kind}) exited while starting: see "
                    f"{service.log}{_tail(service.log)}"
                )
            if time.monotonic() - begin > timeout:
                raise StackError(
                    f"{service.name} ({service.kind}) did not answer on {service.address} "
                    f"within {timeout:g} s (--timeout): see {service.log}{_tail(service.log)}"
                )
            time.sleep(0.25)
        waited = time.monotonic() - begin
        say(f"{service.name} ({service.kind}) ready at {service.address} ({waited:.1f} s)")


def _ready(stack: Stack, service: Service) -> bool:
    """Whether the service answers: S3 once the bucket exists, MLflow once /health says OK,
    the Ray head once `ray start` has recorded its address (all its processes started)."""
    if service.name == "s3":
        return processes.answers(service.port) and _create_bucket(stack, service.address)
    if service.name == "mlflow":
        return processes.http_ok(f"{service.address}/health")
    started = Path(stack.ray_temp_dir, stack_commands.RAY_ADDRESS_FILE).exists()
    return started and processes.answers(service.port)


def _create_bucket(stack: Stack, endpoint: str) -> bool:
    """Create the bucket (kept if it exists); False while the endpoint cannot do it yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    key, secret, _, _ = stack_commands.credentials(stack.services[0].kind)
    client = s3_client(endpoint, credentials=(key, secret))
    try:
        client.create_bucket(Bucket=stack.bucket)
    except ClientError as err:
        return err.response.get("Error", {}).get("Code") in BUCKET_EXISTS
    except BotoCoreError:
        return False
    return True


def _tail(log: str, lines: int = 12) -> str:
    try:
        text = Path(log).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    shown = redact("\n    ".join(text))
    if password := os.environ.get("MINIO_ROOT_PASSWORD"):  # MinIO's banner may print it
        shown = shown.replace(password, "***")
    return f"\n  last lines of the log:\n    {shown}" if text else ""


def _leader(service: Service) -> psutil.Process | None:
    return processes.leader(service.pid, service.started)


def _stop(stack: Stack, say: Say) -> None:
    stuck = []
    for service in reversed(stack.services):
        mark = (MARKER, f"{stack.id}:{service.name}")
        drain = STOP_SECONDS if service.name == "ray" else 0.0
        survivors = processes.stop(
            service.pid, service.started, mark, drain=drain, grace=GRACE_SECONDS
        )
        stuck += [f"{service.name} pid {p.pid}" for p in survivors]
        if not survivors:
            say(f"stopped {service.name} ({service.kind}, pid {service.pid})")
    if stuck:
        raise StackError(
            f"could not stop {', '.join(stuck)} (not even by SIGKILL); their "
            f"records are kept in {stack.state}"
        )
    deadline = time.monotonic() + 10
    answering = processes.answers
    while (busy := [p for p in stack.ports if answering(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    if busy:
        say(f"warning: ports {busy} still accept connections: not from this stack's processes")
    _remove_records(stack)


def _remove_records(stack: Stack) -> None:
    state = Path(stack.state)
    for name in SERVICES:
        (state / f"{name}.pid").unlink(missing_ok=True)
    (state / ENV_FILE).unlink(missing_ok=True)
    (state / STATE_FILE).unlink(missing_ok=True)
    if stack.ray_temp_owned:
        shutil.rmtree(stack.ray_temp_dir, ignore_errors=True)
