"""`knitwork compare` on real runs: two `restore` batches that differ in loss.alpha, and a
search-shaped parent with trial runs made through MlflowClient. The report is opened in headless
Chromium (Debian's package, installed by `make browser`): a missing browser fails the test."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from knitwork.degradation import Degradation
from knitwork.presets import get_preset
from knitwork_cli.main import main
from knitwork_compare.compare import (
    RunRecord,
    best_runs,
    build_comparison,
    metric_direction,
    shown_uri,
)
from pipeline.driver import RestoreOptions, restore
from tests.conftest import shrink
from tests.services import write_images

EXPERIMENT = "compare-tests"
ALPHAS = (0.01, 3.0)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def batches(ray_cluster, tmp_path_factory):
    """Two real restore batches (loss.alpha 0.01 and 3) of two tiny images in a fresh store."""
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        client = MlflowClient(tracking_uri=uri)
        client.create_experiment(EXPERIMENT, artifact_location=str(root / "artifacts"))
        write_images(root / "in", names=("bird.png", "head.png"))
        parents = []
        for alpha in ALPHAS:
            config = shrink(get_preset("fast-inpaint"), steps=3)
            config = config.replace(loss=dataclasses.replace(config.loss, alpha=alpha))
            options = RestoreOptions(
                input=str(root / "in"),
                output=str(root / f"out-{alpha}"),
                config=config,
                degradation=Degradation(task="inpaint", fill_ratio=0.04),
                preset="fast-inpaint",
                synthetic=True,
                progress=False,
                experiment=EXPERIMENT,
            )
            summary = restore(options)
            assert summary.exit_code == 0 and summary.tracked
            parents.append(summary.parent_run_id)
        yield client, parents
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store(batches, monkeypatch):
    client, parents = batches
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return client, parents


def children(client: MlflowClient, parent: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


def row(stdout: str, label: str) -> list[str]:
    """The cells of the text table's row ``label`` (one block: --width is wide)."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith(label + "  "))
    return re.split(r"\s{2,}", line.strip())[1:]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(binary).exists(), "chromium is missing: `make browser` installs it (apt)"
    profile = cwd / "chromium-profile"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_compare_lists_every_run_marks_the_best_and_writes_a_report(store, tmp_path, capsys):
    client, parents = store
    runs = {p: children(client, p) for p in parents}
    out_dir = tmp_path / "report"
    assert main(["compare", EXPERIMENT, "--output", str(out_dir), "--width", "400"]) == 0
    stdout = capsys.readouterr().out
    every = [*parents, *(r.info.run_id for kids in runs.values() for r in kids)]
    assert len(every) == 6 and all(run_id in stdout for run_id in every)
    params = stdout.split("params that differ")[1].split("metrics (")[0]
    assert "loss.alpha" in params and "model.patches.size" not in params
    assert re.search(r"\d+ identical hidden", params)
    assert row(stdout, "loss.alpha") == ["0.01", "0.01", "0.01", "3.0", "3.0", "3.0"]
    means = [client.get_run(p).data.metrics["mean_psnr"] for p in parents]
    best = int(np.argmax(means))
    cells = row(stdout, "mean_psnr ↑")
    assert cells[3 * best].endswith("*") and not cells[3 * (1 - best)].endswith("*")
    first, second = (
        {r.data.tags["image"]: r.data.metrics["psnr"] for r in runs[p]} for p in parents
    )
    psnr = row(stdout, "psnr ↑")  # columns: batch 1, its bird, its head, batch 2, ...
    for column, image in ((1, "bird.png"), (2, "head.png")):
        if first[image] == second[image]:  # a tie marks nobody
            assert not psnr[column].endswith("*") and not psnr[column + 3].endswith("*")
            continue
        winner = column if first[image] > second[image] else column + 3
        assert psnr[winner].endswith("*") and not psnr[(winner + 3) % 6].endswith("*")
    report = out_dir / "report.html"
    assert f"report: {report}" in stdout
    assert_self_contained(report.read_text(encoding="utf-8"))
    assert_renders(report, every, tmp_path)


def assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?(data:|#))""", html)
    assert "@import" not in html and "url(" not in html and "<script" not in html
    pictures = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)
    # a metric-against-alpha plot, loss curves, restored and side-by-side images of 4 runs
    assert len(pictures) >= 1 + 6 + 2 * 4, len(pictures)
    for section in ("Parameters that differ", "Metrics against parameters", "Curves", "Images"):
        assert section in html
    assert "loss.alpha" in html and "★" in html and "loss/total" in html


def assert_renders(report: Path, run_ids: list[str], tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    url = report.resolve().as_uri()
    result = chromium(f"--screenshot={shot}", "--window-size=1280,2400", url, cwd=tmp_path)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and picture.size == (1280, 2400)
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and plots: not blank
    dom = chromium("--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert all(run_id in dom.stdout for run_id in run_ids)
    assert "Comparison of 6 runs" in dom.stdout


def test_a_parent_run_id_brings_its_children_and_no_argument_the_whole_store(store, capsys):
    client, parents = store
    assert main(["compare", parents[1], "--no-report", "--width", "400"]) == 0
    stdout = capsys.readouterr().out
    kids = [r.info.run_id for r in children(client, parents[1])]
    assert stdout.startswith("3 runs from") and all(k in stdout for k in [parents[1], *kids])
    assert parents[0] not in stdout
    assert main(["compare", "--no-report"]) == 0
    assert capsys.readouterr().out.startswith("6 runs from")


def test_runs_of_any_shape_a_search_with_trials(tracking, tmp_path, monkeypatch, capsys):
    """A parent with trial runs (params, a metric history, images), as a search logs them."""
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.create_experiment("search-shaped", str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="search", tags={"kind": "search"}).info.run_id
    client.log_param(parent, "task", "inpaint")
    for trial, lr in enumerate((1e-3, 3e-3, 1e-2)):
        tags = {"mlflow.parentRunId": parent, "trial": str(trial)}
        run_id = client.create_run(experiment, run_name=f"trial-{trial}", tags=tags).info.run_id
        client.log_param(run_id, "optim.lr", str(lr))
        for step in range(4):
            client.log_metric(run_id, "psnr", 20 + trial + step, step=step)
        picture = tmp_path / f"trial-{trial}" / "restored.png"
        picture.parent.mkdir()
        Image.fromarray(np.full((16, 16, 3), 60 * trial, np.uint8)).save(picture)
        client.log_artifact(run_id, str(picture))
        client.log_artifact(run_id, str(picture), artifact_path="images")
    out_dir = tmp_path / "report"
    assert main(["compare", parent, "--output", str(out_dir), "--width", "400"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("4 runs from") and "optim.lr" in stdout
    assert row(stdout, "psnr ↑") == ["–", "23", "24", "25*"]
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert 'alt="metrics against optim.lr"' in html and 'alt="psnr by step"' in html
    assert "(no image tag)" in html and "images/restored.png" in html


def test_unknown_names_exit_2_and_say_which_and_how_to_list(store, capsys):
    assert main(["compare", EXPERIMENT, "no-such-experiment"]) == 2
    err = capsys.readouterr().err
    assert "'no-such-experiment' is neither an experiment nor a run id" in err
    assert EXPERIMENT in err and "with no argument" in err


def test_an_empty_store_is_an_error(tracking, capsys):
    assert main(["compare", "--no-report"]) == 2
    assert "no runs in the tracking store" in capsys.readouterr().err


def test_help_explains_arguments_best_rule_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("EXPERIMENT|RUN_ID", "--output", "report.html", "examples:", "lowest for"):
        assert phrase in text, phrase


def record(run_id: str, image: str, **metrics: float) -> RunRecord:
    tags = {"image": image} if image else {}
    return RunRecord(run_id=run_id, name=run_id, experiment="e", metrics=metrics, tags=tags)


def test_best_is_per_image_and_follows_the_metric_name():
    assert metric_direction("psnr_hole") == metric_direction("train/psnr") == "max"
    assert metric_direction("loss/total") == metric_direction("mean_seconds") == "min"
    assert metric_direction("reference_psnr") is None and metric_direction("steps") is None
    runs = [
        record("a1", "a.png", psnr=30.0, seconds=2.0),
        record("a2", "a.png", psnr=31.0, seconds=1.0),
        record("b1", "b.png", psnr=20.0, seconds=5.0),
        record("b2", "b.png", psnr=20.0, seconds=4.0),
        record("solo", "", psnr=10.0),
    ]
    assert best_runs(runs, "psnr") == {"a2"}  # b's tie marks nobody, solo has no rival
    assert best_runs(runs, "seconds") == {"a2", "b2"}
    comparison = build_comparison(runs)
    assert comparison.differing == ["tag:image"] and comparison.identical == {}


def test_report_thumbnails_stay_small():
    from knitwork_compare.report_plots import thumbnail

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((900, 1200, 3), np.uint8)).save(buffer, format="PNG")
    uri, width, height = thumbnail(buffer.getvalue())
    assert uri.startswith("data:image/png;base64,") and max(width, height) <= 512


def test_a_password_in_the_tracking_uri_is_never_printed():
    assert shown_uri("http://ann:s3cret@mlflow:5000") == "http://ann:***@mlflow:5000"
    assert shown_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
