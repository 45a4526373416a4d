"""Batch restoration end to end: real Ray, real MLflow, S3 on moto's server."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from knitwork.degradation import Degradation
from knitwork.io import load_image
from knitwork.presets import get_preset
from pipeline.cluster import ClusterOptions
from pipeline.driver import RestoreOptions, restore
from pipeline.manifest import MANIFEST_NAME
from pipeline.storage import open_storage
from tests.conftest import shrink
from tests.services import write_images

DEGRADATION_FIELDS = ("task", "fill_ratio", "sigma", "scale", "kernel", "degrade_kernel")
CLUSTER_FIELDS = (
    "cpus_per_task", "gpus_per_task", "max_in_flight", "max_retries", "address", "pack"
)  # fmt: skip


def options(source, target, steps=3, **changes) -> RestoreOptions:
    """Restore options for a test; degradation and cluster fields may be given flat."""
    degradation = {"task": "inpaint", "fill_ratio": 0.02}
    degradation |= {k: changes.pop(k) for k in DEGRADATION_FIELDS if k in changes}
    cluster = {k: changes.pop(k) for k in CLUSTER_FIELDS if k in changes}
    task = degradation["task"]
    base = dict(
        input=str(source),
        output=str(target),
        config=shrink(get_preset(f"fast-{task}"), steps=steps),
        degradation=Degradation(**degradation),
        cluster=ClusterOptions(**cluster),
        preset=f"fast-{task}",
        synthetic=True,
        progress=False,
        experiment="tests",
    )
    return RestoreOptions(**(base | changes))


def manifest(target) -> list[dict]:
    text = open_storage(str(target)).read(MANIFEST_NAME).decode()
    return [json.loads(line) for line in text.splitlines()]


def child_runs(uri: str, parent: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    return client, runs


def test_local_batch_writes_outputs_manifest_and_mlflow_runs(ray_cluster, tracking, tmp_path):
    names = write_images(tmp_path / "in")
    summary = restore(options(tmp_path / "in", tmp_path / "out"))
    assert summary.exit_code == 0 and summary.count("ok") == 4
    for name in names:
        assert load_image(tmp_path / "out" / name).pixels.shape == (24, 24, 3)
    records = manifest(tmp_path / "out")
    assert sorted(r["input"] for r in records) == sorted(names)
    assert all(r["status"] == "ok" and r["tracked"] and r["metrics"]["psnr"] > 0 for r in records)
    assert len({r["seed"] for r in records}) == 4  # one seed per image
    client, runs = child_runs(tracking, summary.parent_run_id)
    assert sorted(r.data.tags["image"] for r in runs) == sorted(names)
    run = runs[0]
    assert {"psnr", "ssim", "psnr_hole", "seconds"} <= set(run.data.metrics)
    assert "loss/total" in run.data.metrics and run.data.params["seed"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"restored.png", "side_by_side.png", "model.pt"} <= artifacts
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.params["model.patches.size"] == "3"
    assert parent.data.metrics["ok"] == 4 and "mean_psnr" in parent.data.metrics
    assert MANIFEST_NAME in {a.path for a in client.list_artifacts(summary.parent_run_id)}


def test_s3_to_s3_batch(ray_cluster, tracking, bucket, tmp_path):
    names = write_images(tmp_path / "in")
    source = open_storage(f"s3://{bucket}/clean")
    for name in names:
        source.write(name, (tmp_path / "in" / name).read_bytes())
    summary = restore(options(f"s3://{bucket}/clean", f"s3://{bucket}/restored"))
    assert summary.exit_code == 0 and summary.count("ok") == 4
    target = open_storage(f"s3://{bucket}/restored")
    assert target.list_images() == sorted(names)
    assert len(manifest(f"s3://{bucket}/restored")) == 4


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


def test_packed_tasks_give_each_image_its_solo_result_and_a_bad_one_fails_alone(
    ray_cluster, tracking, tmp_path
):
    write_images(tmp_path / "in")
    (tmp_path / "in" / "tiny.png").write_bytes((tmp_path / "in" / "a.png").read_bytes())
    from PIL import Image

    Image.new("RGB", (3, 3)).save(tmp_path / "in" / "tiny.png")  # too small for the GAN
    solo = restore(options(tmp_path / "in", tmp_path / "solo", task="denoise", pack=1))
    packed = restore(options(tmp_path / "in", tmp_path / "packed", task="denoise", pack=3))
    assert packed.count("ok") == solo.count("ok") == 4 and packed.count("failed") == 1
    tiny = next(r for r in packed.records if r.input == "tiny.png")
    assert "tiny.png" in tiny.error
    by_name = {r.input: r for r in solo.records}
    for record in packed.records:
        if record.status == "ok":
            mine, theirs = record.metrics["psnr"], by_name[record.input].metrics["psnr"]
            assert abs(mine - theirs) < 0.2, record.input
    assert len(manifest(tmp_path / "packed")) == 5
    packs = {r.input: r.metrics.get("packed") for r in packed.records}
    assert packs == {
        "a.png": 3,
        "c.png": 3,
        "sub/b.png": 3,
        "sub/deeper/d.png": 1,
        "tiny.png": None,
    }


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


def test_gpus_asked_on_a_cpu_cluster_run_on_cpus_and_inputs_stay_untouched(
    ray_cluster, tracking, tmp_path, capsys
):
    import hashlib

    names = write_images(tmp_path / "in", names=("g.png", "h.png"))
    digest = {n: hashlib.sha256((tmp_path / "in" / n).read_bytes()).hexdigest() for n in names}
    summary = restore(options(tmp_path / "in", tmp_path / "out", gpus_per_task=0.25))
    assert summary.count("ok") == 2  # not pending forever
    assert "the cluster has 0 GPUs: running on CPUs" in capsys.readouterr().err
    after = {n: hashlib.sha256((tmp_path / "in" / n).read_bytes()).hexdigest() for n in names}
    assert after == digest and sorted(p.name for p in (tmp_path / "in").iterdir()) == names


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


def test_mlflow_server_with_artifacts_on_s3(ray_cluster, mlflow_server, tmp_path, monkeypatch):
    from pipeline.storage import s3_client

    url, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    write_images(tmp_path / "in", names=("x.png", "y.png"))
    summary = restore(options(tmp_path / "in", tmp_path / "out"))
    assert summary.tracked and summary.count("ok") == 2
    client, runs = child_runs(url, summary.parent_run_id)
    assert len(runs) == 2
    assert "restored.png" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    keys = [
        o["Key"]
        for o in s3_client(os.environ["AWS_ENDPOINT_URL"]).list_objects_v2(
            Bucket="mlflow-artifacts", Prefix="mlflow/"
        )["Contents"]
    ]
    assert any(k.endswith("restored.png") for k in keys)


def test_masks_tree_and_ground_truth_scoring(ray_cluster, tracking, tmp_path):
    import numpy as np
    from PIL import Image

    from knitwork.degradation import add_noise

    names = write_images(tmp_path / "clean", names=("p.png", "q/r.png"))
    for name in names:  # real (not synthetic) inputs: noisy copies, scored against the clean
        clean = np.asarray(Image.open(tmp_path / "clean" / name), dtype=np.float32) / 255
        (tmp_path / "noisy" / name).parent.mkdir(parents=True, exist_ok=True)
        noisy = (add_noise(clean, 25, seed=0) * 255).round().astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / "noisy" / name)
    denoise = shrink(get_preset("fast-denoise"), steps=3)
    summary = restore(
        options(
            tmp_path / "noisy",
            tmp_path / "den",
            task="denoise",
            config=denoise,
            synthetic=False,
            ground_truth=str(tmp_path / "clean"),
        )
    )
    assert summary.count("ok") == 2
    assert all(r.metrics["psnr"] > 10 and r.metrics["psnr_hole"] is None for r in summary.records)
    for name in names:  # masks with the same relative names: a white square is the hole
        mask = np.zeros((24, 24), np.uint8)
        mask[8:14, 8:14] = 255
        (tmp_path / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / name)
    summary = restore(
        options(
            tmp_path / "noisy", tmp_path / "inp", synthetic=False, masks=str(tmp_path / "masks")
        )
    )
    assert summary.count("ok") == 2
    (tmp_path / "masks" / "p.png").unlink()
    summary = restore(
        options(
            tmp_path / "noisy", tmp_path / "inp2", synthetic=False, masks=str(tmp_path / "masks")
        )
    )
    failed = [r for r in summary.records if r.status == "failed"]
    assert [r.input for r in failed] == ["p.png"] and "no such file" in failed[0].error


def test_super_resolution_batch_logs_the_blind_kernel(ray_cluster, tracking, tmp_path):
    write_images(tmp_path / "in", names=("s.png", "t.png"))
    sr = shrink(get_preset("fast-sr"), steps=2)
    summary = restore(
        options(
            tmp_path / "in",
            tmp_path / "out",
            task="sr",
            config=sr,
            scale=2,
            degrade_kernel="gaussian:1.0",
        )
    )
    assert summary.count("ok") == 2
    assert load_image(tmp_path / "out" / "s.png").pixels.shape == (24, 24, 3)
    assert all(r.metrics["kernel"] == "estimated" for r in summary.records)
    client, runs = child_runs(tracking, summary.parent_run_id)
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"kernel.npy", "kernel.png", "restored.png"} <= artifacts


def test_synthetic_blind_sr_records_its_kernel_error_in_the_manifest_and_mlflow(
    ray_cluster, tracking, tmp_path
):
    write_images(tmp_path / "in", names=("s.png", "t.png"))
    sr = shrink(get_preset("fast-sr"), steps=2)
    summary = restore(
        options(tmp_path / "in", tmp_path / "out", task="sr", config=sr, degrade_kernel="random")
    )
    assert summary.count("ok") == 2
    for record in manifest(tmp_path / "out"):
        for key in ("kernel_error", "kernel_error_start"):
            value = record["metrics"][key]
            assert isinstance(value, float) and value >= 0
    starts = {r.metrics["kernel_error_start"] for r in summary.records}
    assert len(starts) == 2  # each image its own random kernel
    _, runs = child_runs(tracking, summary.parent_run_id)
    assert len(runs) == 2
    for run in runs:
        assert {"kernel_error", "kernel_error_start", "psnr"} <= run.data.metrics.keys()
