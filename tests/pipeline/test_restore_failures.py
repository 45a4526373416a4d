"""Batch restoration when things go wrong, end to end (real Ray, MLflow, S3 on moto): a bad
image fails alone, a rerun resumes, a killed worker is retried, a stopped tracking server or a
wrong output bucket is refused before any fit."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.driver import restore
from pipeline.manifest import MANIFEST_NAME
from pipeline.storage import open_storage
from tests.pipeline.restore_support import child_runs, manifest, options
from tests.services import write_images


def test_a_corrupt_image_fails_alone_and_a_rerun_fits_nothing_new(ray_cluster, tracking, tmp_path):
    write_images(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    first = restore(options(tmp_path / "in", tmp_path / "out"))
    assert first.exit_code == 1 and first.count("ok") == 4 and first.count("failed") == 1
    broken = next(r for r in first.records if r.input == "broken.png")
    assert "broken.png" in broken.error and "ImageError" in broken.error
    assert not (tmp_path / "out" / "broken.png").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")}
    second = restore(options(tmp_path / "in", tmp_path / "out"))
    assert second.count("skipped") == 4 and second.count("failed") == 1  # broken is retried
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")} == stamps
    _, runs = child_runs(tracking, second.parent_run_id)
    assert [r.data.tags["image"] for r in runs] == ["broken.png"]
    third = restore(options(tmp_path / "in", tmp_path / "out", steps=4))  # new config: redo
    assert third.count("ok") == 4
    fourth = restore(options(tmp_path / "in", tmp_path / "out", steps=4, overwrite=True))
    assert fourth.count("ok") == 4 and fourth.count("skipped") == 0
    attempts = {r["input"]: r["attempt"] for r in manifest(tmp_path / "out")}
    assert attempts["a.png"] == 3 and attempts["broken.png"] == 4


def test_odd_s3_keys_fail_alone_and_every_rerun_finishes(
    ray_cluster, tracking, bucket, s3_endpoint, tmp_path, capsys
):
    from pipeline.storage import s3_client

    names = write_images(tmp_path / "in", names=("a.png", "b.png"))
    client = s3_client(s3_endpoint)
    for key in ("odd/a.png", "odd/b.png", "odd/x//y.png", "odd//z.png", "odd/./a.png"):
        data = (tmp_path / "in" / names[len(key) % 2]).read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=data)
    for attempt in (1, 2):
        summary = restore(options(f"s3://{bucket}/odd", f"s3://{bucket}/out", task="denoise"))
        assert summary.count("failed") == 3 and len(summary.records) == 5
        assert summary.count("ok" if attempt == 1 else "skipped") == 2
        errors = {r.input: r.error for r in summary.records if r.status == "failed"}
        assert set(errors) == {"x//y.png", "/z.png", "./a.png"}  # ./a.png would be a.png
        assert all("not a safe relative name" in e for e in errors.values())
        assert "failed: x//y.png" in capsys.readouterr().err
    records = {r["input"]: r for r in manifest(f"s3://{bucket}/out")}
    assert records["x//y.png"]["attempt"] == 2 and records["a.png"]["status"] == "ok"


@pytest.mark.parametrize("name", ["c/../d.png", "../d.png", "/abs.png", "a//b.png"])
def test_names_that_would_leave_their_folder_are_refused(name, tmp_path):
    from pipeline.driver import name_problem

    problem = name_problem(name, open_storage(str(tmp_path)))
    assert problem is not None and "not a safe relative name" in problem
    assert name_problem("sub/fine.png", open_storage(str(tmp_path))) is None


def test_a_wrong_output_bucket_is_refused_before_any_fit(ray_cluster, tracking, bucket, tmp_path):
    from pipeline.storage import StorageError

    write_images(tmp_path / "in", names=("a.png",))
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        restore(options(tmp_path / "in", "s3://no-such-bucket-here/out"))
    client = MlflowClient(tracking_uri=tracking)
    assert client.get_experiment_by_name("tests") is None  # no batch was even started


def test_an_aborted_batch_closes_its_parent_run_as_failed(ray_cluster, tracking, tmp_path):
    from pipeline.cluster import ClusterError

    write_images(tmp_path / "in", names=("a.png",))
    with pytest.raises(ClusterError, match="cpus-per-task"):
        restore(options(tmp_path / "in", tmp_path / "out", cpus_per_task=3))
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'batch'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert (tmp_path / "out" / MANIFEST_NAME).exists()


def test_a_local_name_that_is_not_utf8_fails_alone(ray_cluster, tracking, tmp_path):
    names = write_images(tmp_path / "in", names=("a.png",))
    odd = os.path.join(os.fsencode(tmp_path / "in"), b"caf\xe9.png")
    with open(odd, "wb") as handle:
        handle.write((tmp_path / "in" / names[0]).read_bytes())
    summary = restore(options(tmp_path / "in", tmp_path / "out", task="denoise"))
    assert summary.count("ok") == 1 and summary.count("failed") == 1
    failed = next(r for r in summary.records if r.status == "failed")
    assert failed.input == "caf\\udce9.png" and "not valid UTF-8" in failed.error
    assert len(manifest(tmp_path / "out")) == 2


def _ray_task_pids(function: str = "process") -> list[int]:
    """PIDs of Ray workers now running ``function`` (Ray titles them ray::<function>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if title.startswith(f"ray::{function}"):
                pids.append(int(entry.name))
    return pids


def test_a_killed_worker_is_retried_and_its_image_written_once(ray_cluster, tracking, tmp_path):
    names = write_images(tmp_path / "in")
    result = {}
    opts = options(tmp_path / "in", tmp_path / "out", steps=300, max_in_flight=1)
    thread = threading.Thread(target=lambda: result.setdefault("summary", restore(opts)))
    thread.start()
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and thread.is_alive():
        pids = _ray_task_pids()
        if pids:
            time.sleep(0.5)  # let it get into the fit
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.1)
    thread.join(timeout=300)
    assert killed is not None, "no running task was found to kill"
    summary = result["summary"]
    assert summary.count("ok") == 4 and summary.exit_code == 0
    records = manifest(tmp_path / "out")
    assert sorted(r["input"] for r in records) == sorted(names)  # one record per image
    outputs = sorted(
        p.relative_to(tmp_path / "out").as_posix()
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    )
    assert outputs == sorted([*names, MANIFEST_NAME])  # no duplicates, no temporary files


def test_tracking_server_stopped_before_the_batch(ray_cluster, s3_endpoint, tmp_path, monkeypatch):
    from tests.services import start_mlflow_server, stop

    (tmp_path / "server").mkdir()
    url, proc = start_mlflow_server(tmp_path / "server")
    stop(proc)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    names = write_images(tmp_path / "in")
    with pytest.warns(UserWarning, match="not recorded in MLflow"):
        summary = restore(options(tmp_path / "in", tmp_path / "out"))
    assert summary.count("ok") == 4 and not summary.tracked and summary.parent_run_id is None
    records = manifest(tmp_path / "out")
    assert len(records) == 4 and not any(r["tracked"] for r in records)
    assert all((tmp_path / "out" / n).exists() for n in names)
    # MLflow is back: a rerun fits nothing again but records the four images it missed
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    again = restore(options(tmp_path / "in", tmp_path / "out"))
    assert again.count("skipped") == 4 and again.recorded_late == 4
    records = manifest(tmp_path / "out")
    assert all(r["tracked"] and r["mlflow_run_id"] and r["status"] == "ok" for r in records)
    _, runs = child_runs(store, again.parent_run_id)
    assert sorted(r.data.tags["image"] for r in runs) == sorted(names)
    assert all(r.data.params["recorded_late"] == "true" for r in runs)
    assert "psnr" in runs[0].data.metrics
    third = restore(options(tmp_path / "in", tmp_path / "out"))
    assert third.recorded_late == 0  # nothing is recorded twice
