"""Helpers for tests/pipeline/test_cluster.py: Ray clusters run in fresh interpreters with
their own temp dirs, and the processes they leave (or must not leave) behind."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

PRELUDE = """
import json, os, sys, time
import psutil
from pipeline.cluster import ClusterError, ClusterOptions, connect

def report(**values):
    print("RESULT " + json.dumps(values))
"""

RUN_LOCAL = """
from ray._private.services import canonicalize_bootstrap_address

trap = canonicalize_bootstrap_address(None)  # what a plain ray.init() would join
with connect(ClusterOptions()) as ray:
    task = ray.get(ray.remote(lambda: 2 + 2).remote())
    gcs = ray.get_runtime_context().gcs_address
report(task=task, gcs=gcs, trap=trap)
"""


def run(script: str, env: dict[str, str], cwd: Path) -> dict:
    """Run PRELUDE + script in a fresh interpreter; the values it reported."""
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, f"rc={out.returncode}\n{out.stderr[-4000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def user_env(ray_tmp: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no RAY_* settings, Ray's temp dir and HOME inside ``ray_tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    (ray_tmp / "home").mkdir(exist_ok=True)
    return env | {"RAY_TMPDIR": str(ray_tmp), "HOME": str(ray_tmp / "home")} | extra


def processes_of(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``folder`` (a Ray temp dir), and theirs."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if str(folder) in " ".join(proc.cmdline()):
                found |= {proc, *proc.children(recursive=True)}
        except psutil.Error:
            pass
    return [p for p in found if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop(processes: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL after 10 s; a zombie counts as stopped (its parent reaps it)."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    for proc in processes:
        if _alive(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def assert_nothing_left(folder: Path) -> None:
    deadline = time.monotonic() + 15
    while (left := processes_of(folder)) and time.monotonic() < deadline:
        time.sleep(0.5)
    names = [f"{p.pid} {_name(p)}" for p in left]
    stop(left)
    assert not left, f"Ray processes left behind (now stopped): {names}"


def _name(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:120]
    except psutil.Error:
        return "?"


def current_cluster_file(ray_tmp: Path) -> Path:
    """Where Ray looks for "the machine's running cluster" when RAY_TMPDIR is ``ray_tmp``."""
    (ray_tmp / "ray").mkdir(exist_ok=True)
    return ray_tmp / "ray" / "ray_current_cluster"


def short_temp_dir(prefix: str) -> Path:
    # Ray's unix sockets live under the temp dir: keep its path short (108-byte limit).
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback
