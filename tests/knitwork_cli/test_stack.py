"""`knitwork stack up | status | down` as a user runs them: real moto, MLflow and Ray processes
on 127.0.0.1, started once for the module and always stopped at its end."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

KNITWORK = [sys.executable, "-m", "knitwork_cli", "stack"]
CLIENT_ENV = {  # a client's environment: the user's, without S3, MLflow or Ray settings
    k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))
}


def run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [*KNITWORK, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)


def exported(stdout: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of `up`'s output (trailing comments dropped)."""
    lines = [line.split("  #")[0] for line in stdout.splitlines() if line.startswith("export ")]
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def started_processes(state: Path) -> list[psutil.Process]:
    """The leaders recorded in the pid files, everything in their process groups, and the
    descendants of these (Ray's workers have process groups of their own)."""
    record = json.loads((state / "stack.json").read_text())
    pids = {int((state / f"{s['name']}.pid").read_text()) for s in record["services"]}
    procs = []
    for proc in psutil.process_iter():
        try:
            if proc.pid in pids or os.getpgid(proc.pid) in pids:
                procs += [proc, *proc.children(recursive=True)]
        except (psutil.Error, OSError):
            continue
    return list({proc.pid: proc for proc in procs}.values())


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def s3_client(env: dict[str, str]):
    """A boto3 client for the printed endpoint, with the printed (dummy) credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(state folder, exported settings, the record of stack.json) of a running stack."""
    state = tmp_path_factory.mktemp("stack") / "state"
    try:
        started = run("up", "--state", state, "--s3", "moto", "--num-cpus", "1", env=CLIENT_ENV)
        assert started.returncode == 0, started.stderr
        assert "memory only" in started.stderr and "dummies" in started.stdout
        record = json.loads((state / "stack.json").read_text())
        yield state, exported(started.stdout), record
    finally:  # `down` unless a test did it, then a safety net for what `down` left
        leftovers = started_processes(state) if (state / "stack.json").exists() else []
        if leftovers:
            run("down", "--state", state)
        for proc in leftovers:
            if alive(proc):
                proc.send_signal(signal.SIGKILL)


def test_up_prints_every_setting_and_no_secret(stack):
    state, env, _ = stack
    names = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_ADDRESS"}
    names |= {"AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED", "MLFLOW_TRACKING_URI"}
    names |= {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"}
    assert set(env) == names
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # a client joins the loopback head
    assert env["AWS_SECRET_ACCESS_KEY"].startswith("knitwork-dummy")
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert env["RAY_ADDRESS"].startswith("127.0.0.1:")
    assert exported((state / "env.sh").read_text()) == env


def test_status_lists_every_service_up(stack):
    state, env, _ = stack
    result = run("status", "--state", state)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:4]]
    assert [(row[0], row[-1]) for row in rows] == [("s3", "up"), ("mlflow", "up"), ("ray", "up")]
    assert env["RAY_ADDRESS"] in result.stdout


def test_every_listener_is_on_loopback(stack):
    state, _, _ = stack
    listeners = set()
    for proc in started_processes(state):
        try:
            found = proc.net_connections("inet")
        except psutil.Error:
            continue
        listeners |= {c.laddr for c in found if c.status == psutil.CONN_LISTEN}
    assert len(listeners) >= 3
    for address in listeners:
        ip = ipaddress.ip_address(address.ip)
        assert (getattr(ip, "ipv4_mapped", None) or ip).is_loopback, address


def test_second_up_starts_nothing_and_says_so(stack):
    state, _, record = stack
    result = run("up", "--state", state)
    assert result.returncode == 1 and result.stdout == ""
    assert "already running" in result.stderr and "stack down" in result.stderr
    assert json.loads((state / "stack.json").read_text()) == record


def test_s3_put_and_get_at_the_printed_endpoint(stack):
    client = s3_client(stack[1])
    client.put_object(Bucket="knitwork", Key="check/hello.txt", Body=b"hello")
    body = client.get_object(Bucket="knitwork", Key="check/hello.txt")["Body"].read()
    assert body == b"hello"


def test_mlflow_run_logs_an_artifact_through_the_server(stack, tmp_path):
    """A client without any S3 setting: the server proxies the artifact to the bucket."""
    _, env, _ = stack
    script = textwrap.dedent(
        """
        import pathlib, sys, mlflow
        path = pathlib.Path(sys.argv[1]) / "note.txt"
        path.write_text("knitted")
        mlflow.set_experiment("stack-check")
        with mlflow.start_run() as run:
            mlflow.log_metric("psnr", 30.5)
            mlflow.log_artifact(str(path))
        back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=sys.argv[2])
        print(run.info.run_id, pathlib.Path(back, "note.txt").read_text())
        """
    )
    client_env = CLIENT_ENV | {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}
    args = [sys.executable, "-c", script, tmp_path, tmp_path / "back"]
    out = subprocess.run(args, env=client_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run_id, text = out.stdout.split()[-2:]
    assert text == "knitted"
    listed = s3_client(env).list_objects_v2(Bucket="knitwork", Prefix="mlflow/")["Contents"]
    assert any(item["Key"].endswith(f"{run_id}/artifacts/note.txt") for item in listed)


def test_ray_tasks_run_on_the_head_with_the_s3_settings(stack):
    _, env, _ = stack
    script = (
        "import os, ray; ray.init(log_to_driver=False); "
        "print(ray.get(ray.remote(lambda: os.environ['AWS_ENDPOINT_URL']).remote(), timeout=90))"
    )
    client_env = CLIENT_ENV | {"RAY_ADDRESS": env["RAY_ADDRESS"]}
    client_env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # join at 127.0.0.1 (STACK.md)
    args = [sys.executable, "-c", script]
    out = subprocess.run(args, env=client_env, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == env["AWS_ENDPOINT_URL"]


def test_down_stops_everything(stack):
    state, _, record = stack
    procs = started_processes(state)
    assert len(procs) >= 5  # moto, mlflow (2), ray start and Ray's own processes
    result = run("down", "--state", state)
    assert result.returncode == 0, result.stderr
    assert "gone" in result.stderr and "memory only" in result.stderr
    assert not [p for p in procs if alive(p)]
    assert not [port for port in record["ports"] if listening(port)]
    assert not list(state.glob("*.pid")) and not (state / "stack.json").exists()
    again = run("down", "--state", state)
    assert again.returncode == 0 and "nothing to stop" in again.stderr
    status = run("status", "--state", state)
    assert status.returncode == 1 and "no stack" in status.stdout


def test_up_refuses_a_busy_port_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("up", "--state", tmp_path / "state", "--mlflow-port", port)
    assert result.returncode == 1 and f"--mlflow-port {port}" in result.stderr
    assert not (tmp_path / "state" / "stack.json").exists()
