"""`knitwork bench quality` end to end on a local Ray cluster with a real MLflow store: every
row present, rows recorded as MLflow child runs, reruns resume, bad images fail alone, and
the protocol's degradations are deterministic for a seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knitwork_cli.main import main
from pipeline.bench_suites import SUITES, default_methods, methods_of
from tests.conftest import example_image

SUBSETS = {"inpaint": ["fill=0.01", "fill=0.16", "scratch=0.03", "text=0.03"]}
SIZES = {"inpaint": 24, "denoise": 24, "sr": 40}  # ×4 needs a 10-pixel LR image for 3×3·4 stacks


def write_clean(folder: Path, size: int, names=("bird.png", "head.png")) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        pixels = (example_image(Path(name).stem, size) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return list(names)


def bench(tmp_path: Path, suite: str, *extra: str) -> tuple[int, Path, Path]:
    images, output, report = tmp_path / "clean", tmp_path / "out", tmp_path / f"{suite}.json"
    argv = ["bench", "quality", "--suite", suite, "--images", str(images), "--output",
            str(output), "--steps", "2", "--json", str(report), "--quiet", *extra]  # fmt: skip
    return main(argv), output, report


@pytest.mark.parametrize("suite", ["inpaint", "denoise", "sr"])
def test_bench_writes_every_row_and_records_them(tmp_path, ray_cluster, tracking, suite, capsys):
    names = write_clean(tmp_path / "clean", SIZES[suite])
    # inpainting: the smallest and largest squares and both free-form holes, to keep it short
    chosen = SUBSETS.get(suite, [s.name for s in SUITES[suite]])
    code, output, report = bench(tmp_path, suite, "--settings", ",".join(chosen))
    assert code == 0, capsys.readouterr().err
    rows = json.loads(report.read_text())["rows"]
    expected = {(m, s, n) for m in default_methods(suite) for s in chosen for n in names}
    assert {(r["method"], r["setting"], r["image"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert row["status"] == "ok", row
        assert {"psnr", "ssim", "psnr_hole", "ssim_hole", "seconds", "params"} <= row.keys()
        assert np.isfinite(row["psnr"]) and 0 < row["ssim"] <= 1
        assert row["repeat"] == 0 and np.isfinite(row["psnr_raw"]) and 0 < row["ssim_raw"] <= 1
        if suite != "inpaint" or row["method"] not in ("knitwork", "mlp"):  # nothing pasted
            assert (row["psnr_raw"], row["ssim_raw"]) == (row["psnr"], row["ssim"])
        assert (row["psnr_hole"] is not None) == (suite == "inpaint")
        assert (output / row["output"]).is_file()
    assert "biharmonic" in methods_of("inpaint") and "bm3d" in methods_of("denoise")
    printed = capsys.readouterr().out
    assert f"{len(expected)} rows ({len(expected)} computed now, 0 failed)" in printed
    assert "knitwork − method, paired over images" in printed  # every suite
    assert "PSNR      " + SUITES[suite][0].name.ljust(12) + " knitwork − mlp" in printed

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("knitwork-bench")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "bench"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == len(expected)
    assert {r.info.run_id for r in children} == {row["mlflow_run_id"] for row in rows}
    child = next(r for r in children if r.data.tags["method"] == "knitwork")
    assert child.data.metrics["psnr"] == pytest.approx(
        next(row["psnr"] for row in rows if row["mlflow_run_id"] == child.info.run_id)
    )
    assert "restored.png" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_rerun_resumes_and_bad_images_fail_alone(tmp_path, ray_cluster, tracking, capsys):
    write_clean(tmp_path / "clean", 24)
    (tmp_path / "clean" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extra = ("--methods", "knitwork,biharmonic", "--settings", "fill=0.01,fill=0.02,fill=0.04")
    code, output, report = bench(tmp_path, "inpaint", *extra)
    assert code == 1
    rows = json.loads(report.read_text())["rows"]
    broken = [r for r in rows if r["image"] == "broken.png"]
    assert len(broken) == 2 * 3 and all(r["status"] == "failed" for r in broken)
    assert all("broken.png" in r["error"] for r in broken)
    assert all(r["status"] == "ok" for r in rows if r["image"] != "broken.png")
    assert "failed: knitwork fill=0.01 broken.png" in capsys.readouterr().err

    (tmp_path / "clean" / "broken.png").unlink()
    written = {p: p.stat().st_mtime_ns for p in output.rglob("*.png")}
    code, _, report = bench(tmp_path, "inpaint", *extra)
    assert code == 0
    assert "12 rows (0 computed now, 0 failed)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*.png")} == written

    more = ("--methods", "knitwork,biharmonic,telea", "--settings", "fill=0.02")
    code, _, report = bench(tmp_path, "inpaint", *more)
    assert code == 0
    assert "6 rows (2 computed now, 0 failed)" in capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    assert {r["setting"] for r in rows} == {"fill=0.02"}
    assert sum(r["method"] == "telea" for r in rows) == 2


def test_packed_bench_rows_equal_solo_rows_and_a_bad_image_fails_alone(
    tmp_path, ray_cluster, tracking, capsys
):
    write_clean(tmp_path / "clean", 24, names=("bird.png", "head.png", "woman.png"))
    (tmp_path / "clean" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extra = ("--methods", "knitwork,mlp", "--settings", "sigma=20", "--steps", "4")
    rows = {}
    for pack in ("1", "4"):
        output = tmp_path / f"out{pack}"
        argv = ["bench", "quality", "--suite", "denoise", "--images", str(tmp_path / "clean"),
                "--output", str(output), "--json", str(tmp_path / f"{pack}.json"), "--quiet",
                "--pack", pack, *extra]  # fmt: skip
        assert main(argv) == 1  # broken.png
        rows[pack] = {
            (r["method"], r["image"]): r
            for r in json.loads((tmp_path / f"{pack}.json").read_text())["rows"]
        }
    assert rows["1"].keys() == rows["4"].keys() and len(rows["4"]) == 8
    for key, row in rows["4"].items():
        if key[1] == "broken.png":
            assert row["status"] == "failed" and "broken.png" in row["error"]
            continue
        assert row["status"] == "ok" and row["packed"] == 3 and rows["1"][key]["packed"] == 1
        assert abs(row["psnr"] - rows["1"][key]["psnr"]) < 0.2, key


def test_unknown_method_is_refused(tmp_path, capsys):
    write_clean(tmp_path / "clean", 24)
    code, _, _ = bench(tmp_path, "denoise", "--methods", "knitwork,telea")
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown method(s) telea for denoise" in err and "bm3d" in err
    code, _, _ = bench(tmp_path, "sr", "--settings", "x3/delta")
    assert code == 2
    assert "unknown setting(s) x3/delta for sr; choose from x2/delta" in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["inpaint", "denoise", "sr"])
def test_degradations_are_deterministic_for_a_seed(suite):
    clean = example_image("butterfly", 40)
    for setting in SUITES[suite]:
        first, truth = setting.degradation.apply(clean, 7)
        again, _ = setting.degradation.apply(clean, 7)
        other, _ = setting.degradation.apply(clean, 8)
        assert np.array_equal(first.image, again.image)
        assert np.array_equal(first.known, again.known)
        if suite == "sr":
            assert first.kernel is None  # blind: the fit learns the kernel
            assert first.image.shape[0] * setting.degradation.scale == truth.shape[0]
            continue
        assert not np.array_equal(first.image, other.image)
        if suite == "inpaint":
            hole = first.hole
            assert (
                abs(hole.mean() - setting.degradation.fill_ratio)
                < 0.3 * setting.degradation.fill_ratio
            )
            rows, cols = np.nonzero(hole)
            assert rows.min() > 0 and cols.min() > 0
            assert rows.max() < 39 and cols.max() < 39
        else:
            noise = (first.image - clean) * 255
            assert abs(noise.std() - setting.degradation.sigma) < 0.25 * setting.degradation.sigma


def test_unsafe_s3_keys_fail_alone_in_the_bench_and_a_rerun_finishes(
    tmp_path, ray_cluster, tracking, bucket, s3_endpoint, capsys
):
    """Keys under the prefix that name no object of their own (``x//y.png``, ``/z.png``, and
    ``./w.png``, which would be read as ``w.png``): their rows fail, each naming its key, and
    the others are benched, on every rerun; nothing is written for them."""
    from pipeline.storage import open_storage, s3_client

    write_clean(tmp_path / "clean", 24, names=("bird.png",))
    data = (tmp_path / "clean" / "bird.png").read_bytes()
    client = s3_client(s3_endpoint)
    for key in ("odd/bird.png", "odd/w.png", "odd/x//y.png", "odd//z.png", "odd/./w.png"):
        client.put_object(Bucket=bucket, Key=key, Body=data)
    report = tmp_path / "rows.json"
    argv = ["bench", "quality", "--suite", "denoise", "--images", f"s3://{bucket}/odd",
            "--output", f"s3://{bucket}/out", "--methods", "nlm", "--sigmas", "25",
            "--json", str(report), "--quiet"]  # fmt: skip
    unsafe = ("x//y.png", "/z.png", "./w.png")
    for computed in (5, 3):  # a rerun computes only the refused rows again
        assert main(argv) == 1  # failed rows are a partial failure
        out, err = capsys.readouterr()
        rows = {r["image"]: r for r in json.loads(report.read_text())["rows"]}
        assert set(rows) == {"bird.png", "w.png", *unsafe}
        assert rows["bird.png"]["status"] == rows["w.png"]["status"] == "ok"
        for key in unsafe:
            assert rows[key]["status"] == "failed"
            assert f"{key!r}: not a safe relative name" in rows[key]["error"]
            assert f"failed: nlm sigma=25 {key}: " in err
        assert f"5 rows ({computed} computed now, 3 failed)" in out
    written = open_storage(f"s3://{bucket}/out").list_images()
    assert [n for n in written if n.startswith("sigma=25/nlm/")] == [
        "sigma=25/nlm/bird.png", "sigma=25/nlm/w.png"
    ]  # fmt: skip


def test_sr_random_kernels_are_drawn_per_image_and_scored_and_reruns_skip_them(
    tmp_path, ray_cluster, tracking, capsys
):
    """x2/random and x4/random: each image's own seeded random kernel (written beside its
    truth), the same on a rerun, which skips every row; the Knitwork's rows score its learned
    kernel (kernel_error, and the delta start's), bicubic's have none."""
    from knitwork.kernels import random_kernel

    names = write_clean(tmp_path / "clean", SIZES["sr"])
    extra = ("--settings", "x2/random,x4/random", "--methods", "knitwork,bicubic")
    code, output, report = bench(tmp_path, "sr", *extra)
    out = capsys.readouterr().out
    assert code == 0
    assert "8 rows (8 computed now, 0 failed)" in out and "kernel err" in out
    rows = json.loads(report.read_text())["rows"]
    for row in rows:
        assert row["status"] == "ok", row
        if row["method"] == "bicubic":
            assert row["kernel_error"] is None and row["kernel_error_start"] is None
            continue
        for key in ("kernel_error", "kernel_error_start"):
            assert isinstance(row[key], float) and np.isfinite(row[key]) and row[key] >= 0
    kernels = {}
    for setting, scale in (("x2/random", 2), ("x4/random", 4)):
        for name in names:
            path = output / setting / "truth" / Path(name).with_suffix(".npy")
            seed = next(r["seed"] for r in rows if r["image"] == name)
            kernels[setting, name] = (path.read_bytes(), path.stat().st_mtime_ns)
            assert np.array_equal(np.load(path), random_kernel(seed, scale))
        first, second = (np.load(output / setting / "truth" / f"{Path(n).stem}.npy") for n in names)
        assert first.shape != second.shape or not np.allclose(first, second)
        starts = [r["kernel_error_start"] for r in rows if r["setting"] == setting]
        assert len({s for s in starts if s is not None}) == 2  # one truth per image

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    child = client.get_run(next(r["mlflow_run_id"] for r in rows if r["method"] == "knitwork"))
    assert np.isfinite(child.data.metrics["kernel_error"])

    code, _, report = bench(tmp_path, "sr", *extra)
    assert code == 0
    assert "8 rows (0 computed now, 0 failed)" in capsys.readouterr().out
    assert json.loads(report.read_text())["rows"] == rows
    for (setting, name), (data, mtime) in kernels.items():
        path = output / setting / "truth" / Path(name).with_suffix(".npy")
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime)
