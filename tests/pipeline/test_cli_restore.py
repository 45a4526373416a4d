"""`knitwork restore` as a user runs it: its own local Ray cluster, sqlite MLflow in the cwd."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.services import write_images


def test_restore_command_end_to_end(s3_endpoint, tmp_path):
    write_images(tmp_path / "in", names=("one.png", "two.png"))
    (tmp_path / "in" / "bad.png").write_text("not an image")
    command = [
        sys.executable,
        "-m",
        "knitwork.cli",
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
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "0 ok, 1 failed, 2 skipped" in again.stdout


def test_restore_refuses_output_inside_input(tmp_path):
    write_images(tmp_path / "in", names=("one.png",))
    command = [
        sys.executable,
        "-m",
        "knitwork.cli",
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
        [sys.executable, "-m", "knitwork.cli", "restore", "--help"], capture_output=True, text=True
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
