"""Reduced denoising protocols of `knitwork bench quality`: --sigmas chooses the noise levels,
--centre-crop keeps each image's centre (and changes the rows' hashes), --every takes a fixed
subset, bm3d-sigma is told the setting's true σ, and the Knitwork's paired PSNR differences
(mean, paired SE, wins, verdict) are right on hand-made numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knitwork.classical import denoise_bm3d_sigma
from knitwork.degradation import Degradation
from knitwork.io import load_image
from knitwork_cli.main import main
from pipeline.bench_suites import methods_of
from pipeline.bench_tables import paired, paired_table
from pipeline.driver import image_seed
from tests.conftest import example_image


def write_images(folder: Path, images: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pixels in images.items():
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / name)


def bench(tmp_path: Path, *extra: str) -> tuple[int, list[dict]]:
    report = tmp_path / "denoise.json"
    report.unlink(missing_ok=True)
    folders = ["--images", str(tmp_path / "clean"), "--output", str(tmp_path / "out")]
    argv = ["bench", "quality", "--suite", "denoise", *folders, "--json", str(report), "--quiet"]
    code = main([*argv, *extra])
    return code, json.loads(report.read_text())["rows"] if report.exists() else []


def test_sigmas_every_and_the_true_sigma(tmp_path, ray_cluster, tracking, capsys):
    names = ("bird.png", "head.png", "woman.png")
    write_images(tmp_path / "clean", {n: example_image(Path(n).stem, 24) for n in names})
    extra = ("--methods", "bm3d,bm3d-sigma", "--sigmas", "15,25", "--every", "2")
    code, rows = bench(tmp_path, *extra)
    assert code == 0, capsys.readouterr().err
    assert {r["setting"] for r in rows} == {"sigma=15", "sigma=25"}
    assert {r["image"] for r in rows} == {"bird.png", "woman.png"}  # sorted list, every 2nd
    assert len(rows) == 2 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert "sigma=15     bm3d-sigma" in capsys.readouterr().out

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("knitwork-bench")
    (parent,) = [r for r in client.search_runs([experiment.experiment_id])
                 if r.data.tags.get("kind") == "bench"]  # fmt: skip
    assert parent.data.params["every"] == "2"
    assert parent.data.params["settings"] == "sigma=15,sigma=25"

    # bm3d-sigma restored what BM3D told σ = 25/255 restores from the same noise (to a level:
    # BM3D's floats wobble by ~1e-7 between calls), not what it does when told 40/255
    out = tmp_path / "out" / "sigma=25"
    truth = load_image(out / "truth" / "woman.png").pixels
    obs, _ = Degradation(task="denoise", sigma=25).apply(truth, image_seed(0, "woman.png"))
    written = np.asarray(Image.open(out / "bm3d-sigma" / "woman.png"), dtype=np.int16)
    told = {s: (denoise_bm3d_sigma(obs, s / 255) * 255).round().astype(np.int16) for s in (25, 40)}
    assert np.abs(written - told[25]).max() <= 1
    assert np.abs(written - told[40]).mean() > 2

    code, rows = bench(tmp_path, *extra, "--settings", "sigma=25")  # a subset: nothing to redo
    assert code == 0 and {r["setting"] for r in rows} == {"sigma=25"} and len(rows) == 4
    assert "4 rows (0 computed now, 0 failed)" in capsys.readouterr().out


def test_centre_crop_keeps_the_centre_and_changes_the_hash(tmp_path, ray_cluster, tracking, capsys):
    clean = {"wide.png": example_image("bird", 40)[10:30], "square.png": example_image("head", 32)}
    write_images(tmp_path / "clean", clean)
    extra = ("--methods", "bm3d", "--settings", "sigma=20")
    code, whole = bench(tmp_path, *extra)
    assert code == 0 and all(r["centre_crop"] is None for r in whole)
    code, cropped = bench(tmp_path, *extra, "--centre-crop", "24")
    assert code == 0
    assert "2 rows (2 computed now, 0 failed)" in capsys.readouterr().out  # not mixed with those
    hashes = {r["image"]: r["config_hash"] for r in whole}
    for row in cropped:
        assert row["status"] == "ok" and row["centre_crop"] == 24
        assert row["config_hash"] != hashes[row["image"]]
    sizes = {r["image"]: (r["height"], r["width"]) for r in cropped}
    assert sizes == {"wide.png": (20, 24), "square.png": (24, 24)}  # a shorter side kept whole
    truth = load_image(tmp_path / "out" / "sigma=20" / "truth" / "square.png").pixels
    source = load_image(tmp_path / "clean" / "square.png").pixels
    assert np.array_equal(truth, source[4:28, 4:28])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--sigmas", "15,abc"), "--sigmas must be comma-separated numbers"),
        (("--sigmas", "15,0"), "--sigmas must be distinct numbers > 0"),
        (("--sigmas", "15,15"), "--sigmas must be distinct numbers > 0"),
        (("--sigmas", "15", "--settings", "sigma=10"), "unknown setting(s) sigma=10"),
        (("--every", "0"), "--every must be a whole number ≥ 1"),
        (("--centre-crop", "0"), "--centre-crop must be a whole number ≥ 1"),
    ],
)
def test_bad_protocol_options_are_refused(tmp_path, capsys, extra, message):
    write_images(tmp_path / "clean", {"bird.png": example_image("bird", 24)})
    code, _ = bench(tmp_path, *extra)
    assert code == 2
    assert message in capsys.readouterr().err


def test_sigmas_are_for_the_denoise_suite_only(tmp_path, capsys):
    write_images(tmp_path / "clean", {"bird.png": example_image("bird", 24)})
    argv = ["bench", "quality", "--suite", "inpaint", "--images", str(tmp_path / "clean"),
            "--sigmas", "15"]  # fmt: skip
    assert main(argv) == 2
    assert "--sigmas is for the denoise suite only" in capsys.readouterr().err
    assert "bm3d-sigma" in methods_of("denoise") and "bm3d" in methods_of("denoise")


def test_paired_difference_standard_error_and_wins():
    ours = {"a": 30.0, "b": 28.0, "c": 25.0, "only-ours": 40.0}
    theirs = {"a": 29.0, "b": 29.0, "c": 24.0, "only-theirs": 1.0}
    d = paired(ours, theirs)  # differences 1, −1, 1 on the three shared images
    assert d.n == 3 and d.wins == 2
    assert d.mean == pytest.approx(1 / 3)
    assert d.se == pytest.approx(np.std([1, -1, 1], ddof=1) / np.sqrt(3))  # 2/3
    assert d.se == pytest.approx(2 / 3)
    one = paired({"a": 20.0}, {"a": 21.5})
    assert (one.mean, one.se, one.wins, one.n) == (pytest.approx(-1.5), None, 0, 1)
    assert paired({"a": 1.0}, {"b": 1.0}) is None


def test_paired_table_pairs_images_per_setting():
    def row(method, image, psnr, status="ok"):
        return {"setting": "sigma=25", "method": method, "image": image, "psnr": psnr,
                "status": status}  # fmt: skip

    rows = [row("knitwork", "a", 30.0), row("knitwork", "b", 28.0), row("knitwork", "c", 25.0),
            row("bm3d", "a", 29.0), row("bm3d", "b", 29.0), row("bm3d", "c", 24.0),
            row("nlm", "a", 31.0), row("nlm", "b", None, "failed")]  # fmt: skip
    lines = paired_table(rows, "denoise").splitlines()
    assert lines[3].split() == ["PSNR", "sigma=25", "knitwork", "−", "nlm", "-1.00", "–", "0/1",
                                "within", "SE"]  # fmt: skip
    assert lines[4].split() == ["PSNR", "sigma=25", "knitwork", "−", "bm3d", "+0.33", "0.67",
                                "2/3", "within", "SE"]  # fmt: skip
    assert paired_table([r for r in rows if r["method"] != "knitwork"], "denoise") == ""


def test_a_name_that_is_not_utf8_fails_alone_in_the_bench(tmp_path, ray_cluster, tracking, capsys):
    import os

    write_images(tmp_path / "clean", {"bird.png": example_image("bird", 24)})
    odd = os.path.join(os.fsencode(tmp_path / "clean"), b"caf\xe9.png")
    with open(odd, "wb") as handle:
        handle.write((tmp_path / "clean" / "bird.png").read_bytes())
    code, rows = bench(tmp_path, "--methods", "nlm", "--sigmas", "25")
    assert code != 0  # a failed row is a partial failure
    by_image = {r["image"]: r for r in rows}
    assert by_image["bird.png"]["status"] == "ok"
    failed = by_image["caf\\udce9.png"]
    assert failed["status"] == "failed" and "not valid UTF-8" in failed["error"]
    assert "rename the file" in failed["error"]
    assert json.loads((tmp_path / "out" / "rows.jsonl").read_text().splitlines()[0])  # readable
