"""The console of `knitwork restore` when Ray has something to say: a worker killed mid-fit is
retried by Ray, and the command's output stays one progress bar and one summary table, without
Ray's own lines ("(raylet) A worker died or was killed ...", "INFO worker.py ...") or any
traceback, unless `knitwork --verbose` asks for them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.services import write_images

TASK_TITLE = "ray::process_pack"  # Ray titles a worker by the task it runs
RAY_LINES = {
    "a raylet's message": re.compile(r"\((raylet|autoscaler)[^)]*\)"),
    "a task's output": re.compile(r"\([\w.:]*\s?pid=\d+"),
    "Ray's logger": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+[A-Z]+ \w+\.py:\d+ --"),
    "Ray's C++ log": re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\]"),
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
}


def _task_workers(pid: int) -> list[int]:
    """PIDs of the command's Ray workers now running a restoration task."""
    import psutil

    try:
        processes = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in processes:
        try:
            if process.cmdline()[:1] and process.cmdline()[0].startswith(TASK_TITLE):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def restore_killing_a_worker(
    folder: Path, *options: str
) -> tuple[subprocess.CompletedProcess, int]:
    """`knitwork [OPTIONS] restore in out` on one tiny image (its own local Ray cluster, sqlite
    MLflow in the folder), with the worker fitting it killed (SIGKILL) half a second in."""
    write_images(folder / "in", names=("one.png",))
    command = [sys.executable, "-m", "knitwork_cli", *options, "restore", "in", "out"]
    command += ["--task", "denoise", "--synthetic", "--steps", "200", "--max-in-flight", "1"]
    ray_temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: socket paths
    env = os.environ | {"RAY_TMPDIR": ray_temp}
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        killed, deadline = None, time.monotonic() + 120
        while killed is None and process.poll() is None and time.monotonic() < deadline:
            workers = _task_workers(process.pid)
            if workers:
                time.sleep(0.5)  # into the fit
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
            time.sleep(0.05)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()  # only on a failure above: the command stops its own cluster
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert killed is not None, "no running task was found to kill:\n" + err
    return subprocess.CompletedProcess(command, process.returncode, out, err), killed


def ray_lines(text: str) -> dict[str, list[str]]:
    """The lines of ``text`` that Ray wrote, by kind (see RAY_LINES)."""
    lines = text.replace("\r", "\n").splitlines()
    found = {kind: [line for line in lines if p.search(line)] for kind, p in RAY_LINES.items()}
    return {kind: hits for kind, hits in found.items() if hits}


def _restored_once(folder: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 ok, 0 failed, 0 skipped" in result.stdout  # the summary
    assert "one.png" in result.stdout and "MLflow: batch run" in result.stdout
    written = sorted(p.name for p in (folder / "out").iterdir())
    assert written == ["_manifest.jsonl", "one.png"]  # the image written once


def test_a_killed_worker_leaves_no_ray_lines_or_traceback_on_the_console(tmp_path):
    result, _ = restore_killing_a_worker(tmp_path)
    _restored_once(tmp_path, result)
    assert ray_lines(result.stdout) == {} and ray_lines(result.stderr) == {}
    assert "restore: 100%" in result.stderr  # the progress bar


def test_with_verbose_ray_says_what_happened(tmp_path):
    result, killed = restore_killing_a_worker(tmp_path, "--verbose")
    _restored_once(tmp_path, result)
    said = ray_lines(result.stdout + result.stderr)
    assert "A worker died or was killed while executing a task" in result.stdout
    assert f"Worker PID: {killed}" in result.stdout and "a raylet's message" in said
    assert "Started a local Ray instance" in result.stderr  # Ray's INFO lines
