"""The commands, folders and settings of `pipeline.stack`'s services: the S3 server's (MinIO or
moto) and the Ray head's command lines, the Ray head's temp folder, the S3 credentials each
kind of server takes, and the settings a service inherits or a client exports (``env.sh``).

Plain values only: nothing here starts, waits for or stops a process.
"""

from __future__ import annotations

import os
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

from pipeline.cluster import LOCAL_OBJECT_STORE_BYTES, LOOPBACK_IP, local_cluster_environment

DUMMY_KEY, DUMMY_SECRET = "knitwork-dummy-key", "knitwork-dummy-secret"  # moto takes any
MINIO_DEFAULT = "minioadmin"  # MinIO's built-in root user and password when none is set
RAY_ADDRESS_FILE = "ray_current_cluster"  # written by `ray start` once the head runs
RAY_TEMP_LIMIT = 40  # longer temp dirs overflow Ray's unix socket paths (107 bytes)
RAY_PORT_OPTIONS = ("node-manager", "object-manager", "dashboard-agent-listen")
RAY_PORT_OPTIONS += ("dashboard-agent-grpc", "runtime-env-agent", "metrics-export")


def ray_temp_dir(state: Path) -> tuple[str, bool]:
    """STATE/ray, or a new folder under /tmp where that path is too long for Ray (True); the
    address file an earlier head left is removed (its appearance tells that the head runs)."""
    inside = state / "ray"
    if len(str(inside)) > RAY_TEMP_LIMIT:
        return tempfile.mkdtemp(prefix="knitwork-ray-"), True
    (inside / RAY_ADDRESS_FILE).unlink(missing_ok=True)
    return str(inside), False


def s3_command(kind: str, port: int, console_port: int, state: Path) -> list[str]:
    if kind == "minio":
        addresses = f"--address {LOOPBACK_IP}:{port} --console-address {LOOPBACK_IP}:{console_port}"
        return ["minio", "server", str(state / "minio"), *addresses.split()]
    return [sys.executable, "-m", "moto.server", "-H", LOOPBACK_IP, "-p", str(port)]


def ray_command(port: int, ports: list[int], client: int, temp: str, cpus: int | None):
    flags = (
        f"--head --block --node-ip-address={LOOPBACK_IP} --port={port} --disable-usage-stats "
        f"--include-dashboard=false --object-store-memory={LOCAL_OBJECT_STORE_BYTES}"
    )
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", *flags.split()]
    command += [f"--{n}-port={p}" for n, p in zip(RAY_PORT_OPTIONS, ports, strict=True)]
    command.append(f"--temp-dir={temp}")
    if cpus is not None:
        command.append(f"--num-cpus={cpus}")
    if find_spec("grpc") is not None:  # with ray[client] present the head serves Ray Client
        command.append(f"--ray-client-server-port={client}")  # (default port: 10001)
    return command


def credentials(kind: str) -> tuple[str, str, str, str]:
    """S3 access key, secret, the secret as printed (a real one only as a reference to the
    variable that holds it) and what to say of them. MinIO reads MINIO_ROOT_USER/PASSWORD
    from the environment it inherits, else uses its built-in defaults."""
    if kind == "moto":
        return DUMMY_KEY, DUMMY_SECRET, DUMMY_SECRET, "dummies: moto takes any credentials"
    key = os.environ.get("MINIO_ROOT_USER") or MINIO_DEFAULT
    if secret := os.environ.get("MINIO_ROOT_PASSWORD"):
        return key, secret, '"$MINIO_ROOT_PASSWORD"', "MinIO's root user and password"
    return key, MINIO_DEFAULT, MINIO_DEFAULT, "MinIO's defaults: dummies, for 127.0.0.1 only"


def s3_settings(kind: str, endpoint: str, printed: bool = False) -> dict[str, str]:
    key, secret, shown, _ = credentials(kind)
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": shown if printed else secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def exports(kind: str, addresses: dict[str, str]) -> tuple[str, ...]:
    """The settings a client exports, as shell lines (no real secret among them)."""
    settings = s3_settings(kind, addresses["s3"], printed=True)
    settings |= {"MLFLOW_TRACKING_URI": addresses["mlflow"], "RAY_ADDRESS": addresses["ray"]}
    settings |= local_cluster_environment()  # a Ray client of a loopback head needs them too
    lines = [f"export {name}={value}" for name, value in settings.items()]
    lines[1:3] = [f"{line}  # {credentials(kind)[3]}" for line in lines[1:3]]
    return (*lines, "unset AWS_SESSION_TOKEN AWS_PROFILE")
