"""`knitwork restore` as a user runs it: its own local Ray cluster, sqlite MLflow in the cwd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from knitwork.degradation import Degradation
from knitwork.presets import get_preset
from tests.services import write_images


def test_restore_command_end_to_end(s3_endpoint, tmp_path):
    write_images(tmp_path / "in", names=("one.png", "two.png"))
    (tmp_path / "in" / "bad.png").write_text("not an image")
    command = [
        sys.executable,
        "-m",
        "knitwork_cli",
        "restore",
        "in",
        "out",
        "--task",
        "denoise",
        "--synthetic",
        "--sigma",
        "30",
        "--steps",
        "3",
        "--quiet",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # one image failed
    assert "2 ok, 1 failed, 0 skipped" in result.stdout
    assert "bad.png" in result.stdout and "not a recognised image" in result.stdout
    assert (tmp_path / "mlflow.db").exists() and "MLflow: batch run" in result.stdout
    lines = (tmp_path / "out" / "_manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["status"] for line in lines) == ["failed", "ok", "ok"]
    assert "INFO mlflow" not in result.stderr  # a quiet console: no MLflow chatter
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "0 ok, 1 failed, 2 skipped" in again.stdout
    (tmp_path / "mlflow.db").unlink()  # a new store: MLflow says what it creates, if asked
    command.insert(3, "--verbose")
    loud = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "INFO mlflow" in loud.stderr and "0 ok, 1 failed, 2 skipped" in loud.stdout


def test_restore_refuses_output_inside_input(tmp_path):
    write_images(tmp_path / "in", names=("one.png",))
    command = [
        sys.executable,
        "-m",
        "knitwork_cli",
        "restore",
        "in",
        "in/out",
        "--task",
        "denoise",
        "--no-tracking",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "outputs would be read back as inputs" in result.stderr


def test_restore_help_explains_storage_tracking_and_ray():
    out = subprocess.run(
        [sys.executable, "-m", "knitwork_cli", "restore", "--help"], capture_output=True, text=True
    )
    for phrase in (
        "s3://bucket/prefix",
        "_manifest.jsonl",
        "mlflow ui",
        "--gpus-per-task",
        "--masks",
        "RAY_ADDRESS",
    ):
        assert phrase in out.stdout, phrase


def _listeners(pid: int) -> set[tuple[str, int, str]]:
    """(ip, port, process name) of every listening socket of ``pid`` and its descendants."""
    import psutil

    found = set()
    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port, process.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_the_local_cluster_listens_on_loopback_only_whatever_the_environment(tmp_path):
    """A new user's run: no Ray settings of ours in the environment (even one asking for a
    networked cluster); every socket of every process the command starts is on loopback."""
    import ipaddress
    import os
    import tempfile
    import time

    write_images(tmp_path / "in", names=("one.png", "two.png"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"  # what the CLI must override
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: socket paths
    command = [sys.executable, "-m", "knitwork_cli", "restore", "in", "out", "--task", "denoise"]
    command += ["--synthetic", "--steps", "150", "--quiet", "--no-tracking"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    seen: set[tuple[str, int, str]] = set()
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        seen |= _listeners(process.pid)
        time.sleep(0.3)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "2 ok" in out
    names = {name for _, _, name in seen}
    assert "gcs_server" in names and "raylet" in names, seen  # the cluster was seen running
    outside = {
        s for s in seen if not ipaddress.ip_address(s[0].removeprefix("::ffff:")).is_loopback
    }
    assert not outside, outside
    assert not any(port == 8265 for _, port, _ in seen)  # no dashboard


SECRET = "s3cr3t-Pa55"


def knitwork(*args, cwd, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "knitwork_cli", *map(str, args)]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, env=os.environ | env
    )


def test_an_s3_endpoint_with_credentials_is_never_echoed(tmp_path):
    from tests.services import free_port

    endpoint = f"http://ann:{SECRET}@127.0.0.1:{free_port()}"
    env = {"AWS_ACCESS_KEY_ID": "ann", "AWS_SECRET_ACCESS_KEY": SECRET}
    args = ["restore", "s3://bucket/in", "out", "--task", "denoise", "--s3-endpoint-url", endpoint]
    result = knitwork(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2 and "cannot reach the S3 endpoint" in result.stderr
    assert "http://ann:***@127.0.0.1" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_tracking_uri_with_credentials_is_never_echoed(tmp_path):
    """A batch with nothing left to run (the manifest has it done) still opens its MLflow run:
    the store is unreachable, the command warns, and the warning hides the password."""
    from pipeline.driver import RestoreOptions, _hash_payload
    from pipeline.manifest import MANIFEST_NAME, Record, config_hash, render
    from tests.services import free_port

    write_images(tmp_path / "in", names=("one.png",))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "one.png").write_bytes((tmp_path / "in" / "one.png").read_bytes())
    config = get_preset("fast-denoise").with_steps(2)
    options = RestoreOptions(
        input="in", output="out", config=config, degradation=Degradation(task="denoise")
    )
    done = Record(
        input="one.png",
        output="out/one.png",
        status="ok",
        config_hash=config_hash(_hash_payload(options)),
    )
    (tmp_path / "out" / MANIFEST_NAME).write_bytes(render([done]))
    port = free_port()
    env = {
        "MLFLOW_TRACKING_URI": f"http://ann:{SECRET}@127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    result = knitwork(
        "restore", "in", "out", "--task", "denoise", "--steps", "2", cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "0 ok, 0 failed, 1 skipped" in result.stdout
    assert "MLflow tracking at http://ann:***@127.0.0.1" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_bench_help_names_the_random_kernels_and_the_kernel_error():
    out = subprocess.run(
        [sys.executable, "-m", "knitwork_cli", "bench", "quality", "--help"],
        capture_output=True,
        text=True,
    )
    for phrase in ("x2/random", "x4/random", "kernel_error", "kernel_error_start"):
        assert phrase in out.stdout, phrase
