"""Batch restoration end to end: real Ray, real MLflow, S3 on moto's server: what a batch
writes. How a batch fails and recovers: test_restore_failures.py."""

from __future__ import annotations

import os

from knitwork.io import load_image
from knitwork.presets import get_preset
from pipeline.driver import restore
from pipeline.manifest import MANIFEST_NAME
from pipeline.storage import open_storage
from tests.conftest import shrink
from tests.pipeline.restore_support import child_runs, manifest, options
from tests.services import write_images


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
