"""`knitwork tune` end to end: real Ray Tune (ASHA), a real MLflow store, real interruptions."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from knitwork.config import Config
from knitwork.presets import get_preset, load_preset_file
from knitwork_cli.main import main
from tests.services import LOOPBACK_ENV, write_images
from tune.space import apply_params, load_space, resolve_space, to_tune

ROOT = Path(__file__).resolve().parents[2]


def tune_args(images: Path | str, storage: Path | str, *extra: str) -> list[str]:
    return [
        "tune", "--task", "inpaint", "--images", str(images), "--storage", str(storage),
        "--num-samples", "4", "--experiment", "tests", "--fill-ratio", "0.05", *extra,
    ]  # fmt: skip


def runs_of(uri: str) -> tuple[MlflowClient, list, list]:
    """The search (parent) runs and the trial (child) runs of experiment "tests"."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    searches = [r for r in runs if r.data.tags.get("kind") == "search"]
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    return client, searches, trials


def read_trials(folder: Path) -> list[dict]:
    with (folder / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_tiny_search_with_asha_records_runs_and_writes_a_preset_fit_accepts(
    ray_cluster, tracking, tmp_path, capsys
):
    write_images(tmp_path / "in", names=("a.png", "sub/b.png"))
    args = tune_args(tmp_path / "in", tmp_path / "tune", "--steps", "20", "--reports", "2")
    assert main([*args, "--gpus-per-trial", "0.5"]) == 0
    out = capsys.readouterr()
    assert "cluster has 0 GPUs: running on CPUs" in out.err  # not pending forever
    folder = tmp_path / "tune" / "tune-inpaint"
    assert f"wrote {folder / 'best-inpaint.yaml'}" in out.out
    assert "search run" in out.out and out.err.count("trial ") >= 4  # one line per trial

    client, searches, trials = runs_of(tracking)
    assert len(searches) == 1 and len(trials) == 4
    parent = searches[0]
    assert parent.info.status == "FINISHED" and parent.data.params["scheduler"] == "asha"
    assert json.loads(parent.data.params["space"])["loss.alpha"] == {"loguniform": [1e-3, 10.0]}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "best-inpaint.yaml", "trials.csv", "objective.png"
    }  # fmt: skip
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["status"] in ("completed", "stopped")
        history = client.get_metric_history(run.info.run_id, "objective")
        assert [m.step for m in history] == sorted({m.step for m in history}) and history
        assert float(run.data.params["loss.alpha"]) > 0 and run.data.params["optim.steps"] == "20"
        restored = {a.path for a in client.list_artifacts(run.info.run_id, "restored")}
        assert "restored/a.png" in restored and "restored/sub" in restored

    rows = read_trials(folder)
    assert len(rows) == 4 and {r["trial_id"] for r in rows} == {
        r.data.tags["trial_id"] for r in trials
    }
    assert all(r["status"] in ("completed", "stopped") and float(r["objective"]) > 0 for r in rows)
    assert any(r["status"] == "completed" and r["steps_done"] == "20" for r in rows)
    with Image.open(folder / "objective.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 400

    best = folder / "best-inpaint.yaml"
    best_row = max(
        (r for r in rows if r["status"] == "completed"), key=lambda r: float(r["objective"])
    )
    assert float(load_preset_file(best).loss.alpha) == pytest.approx(float(best_row["loss.alpha"]))
    assert parent.data.tags["best_trial_id"] == best_row["trial_id"]
    fit_args = ["fit", str(tmp_path / "in" / "a.png"), "--task", "inpaint", "--synthetic"]
    fit_args += ["--preset-file", str(best), "--steps", "2", "--quiet", "-o"]
    assert main([*fit_args, str(tmp_path / "fitted.png")]) == 0
    assert (tmp_path / "fitted.png").exists()

    # the search's runs compared: every trial listed, the report written
    capsys.readouterr()
    report = tmp_path / "compare"
    assert main(["compare", parent.info.run_id, "--output", str(report)]) == 0
    printed = capsys.readouterr().out
    assert all(run.info.run_id in printed for run in trials)
    html = (report / "report.html").read_text(encoding="utf-8")
    assert all(run.info.run_id in html for run in trials) and "loss.alpha" in html


def _ray_pids(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (the subprocess's own Ray folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _first_result(folder: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for path in folder.glob("trial_*/result.json"):
            if "objective" in path.read_text():
                return
        time.sleep(0.2)
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"no trial result before the search ended or timed out:\n{err}")


def test_an_interrupted_search_resumes_from_checkpoints_and_completes(
    ray_cluster, tracking, tmp_path
):
    """SIGINT a `knitwork tune` process (its own local Ray) after the first report, then
    --resume in this process: every trial ends, and MLflow holds no duplicate run."""
    write_images(tmp_path / "in", names=("a.png", "b.png"))
    ray_dir = Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))  # Ray's socket paths are short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | LOOPBACK_ENV
    env |= {"MLFLOW_TRACKING_URI": tracking, "RAY_TMPDIR": str(ray_dir)}
    args = tune_args(tmp_path / "in", tmp_path / "tune", "--steps", "60", "--reports", "6")
    args += ["--max-concurrent", "2"]
    command = [sys.executable, "-m", "knitwork_cli", *args]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "tune" / "tune-inpaint"
    try:
        _first_result(folder, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _ray_pids(str(ray_dir)):  # never leave the subprocess's Ray behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert proc.returncode == 130, err
    assert "--resume" in err and not (folder / "trials.csv").exists()
    _, searches, trials = runs_of(tracking)
    assert len(searches) == 1 and searches[0].info.status == "RUNNING"

    assert main([*args, "--resume"]) == 0
    rows = read_trials(folder)
    assert len(rows) == 4 and all(r["status"] in ("completed", "stopped") for r in rows)
    _, searches, trials = runs_of(tracking)
    assert len(searches) == 1 and searches[0].info.status == "FINISHED"
    assert sorted(r.data.tags["trial_id"] for r in trials) == sorted(r["trial_id"] for r in rows)
    assert all(r.info.status == "FINISHED" for r in trials)
    results = [json.loads(line) for p in folder.glob("trial_*/result.json") for line in p.open()]
    resumed = [r for r in results if r["training_iteration"] > r["iterations_since_restore"]]
    assert resumed, "no trial continued from its checkpoint"
    assert (folder / "best-inpaint.yaml").exists()


def test_optuna_search_with_images_and_state_on_s3(ray_cluster, tracking, bucket, tmp_path):
    from pipeline.storage import open_storage

    names = write_images(tmp_path / "in", names=("p.png", "q.png"))
    images = open_storage(f"s3://{bucket}/clean")
    for name in names:
        images.write(name, (tmp_path / "in" / name).read_bytes())
    args = tune_args(f"s3://{bucket}/clean", f"s3://{bucket}/tune", "--search", "optuna")
    args += ["--scheduler", "none", "--steps", "4", "--reports", "2", "--num-samples", "2"]
    assert main([*args, "--s3-endpoint-url", os.environ["AWS_ENDPOINT_URL"]]) == 0
    folder = open_storage(f"s3://{bucket}/tune/tune-inpaint")
    assert all(folder.exists(n) for n in ("best-inpaint.yaml", "trials.csv", "objective.png"))
    assert folder.exists("tuner.pkl") and folder.exists("knitwork-search.json")
    rows = list(csv.DictReader(folder.read("trials.csv").decode().splitlines()))
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    _, searches, trials = runs_of(tracking)
    assert len(searches) == 1 and len(trials) == 2
    assert searches[0].data.params["search_alg"] == "optuna"


def test_trials_honour_the_configs_early_stop(ray_cluster, tracking, tmp_path, capsys):
    """A trial runs the core's Trainer, so `optim.early_stop` ends it before its budget, as it
    ends `knitwork fit`."""
    write_images(tmp_path / "in", names=("a.png", "b.png"))
    space = tmp_path / "space.yaml"
    space.write_text("optim.early_stop: noise\nloss.alpha: 1.0\n", encoding="utf-8")
    args = ["tune", "--task", "denoise", "--sigma", "40", "--images", str(tmp_path / "in")]
    args += ["--storage", str(tmp_path / "tune"), "--num-samples", "1", "--scheduler", "none"]
    args += ["--space", str(space), "--steps", "400", "--reports", "40", "--experiment", "tests"]
    assert main(args) == 0
    (row,) = read_trials(tmp_path / "tune" / "tune-denoise")
    assert row["status"] == "completed" and row["optim.early_stop"] == "noise"
    assert row["steps"] == "400" and 0 < int(row["steps_done"]) < 400


def test_a_bad_space_file_exits_2_naming_the_file_and_key(tmp_path, capsys):
    write_images(tmp_path / "in", names=("a.png",))
    space = tmp_path / "space.yaml"
    cases = {
        "loss.alpah: {loguniform: [0.1, 1]}\n": "'loss.alpah' is not a config field",
        "loss.alpha: {loguniform: [0, 1]}\n": "loss.alpha: loguniform needs low > 0",
        "optim.lr: {normal: [0, 1]}\n": "optim.lr: expected one of loguniform",
        "model.patches.scales: {choice: [[2, 4]]}\n": "must start with 1",
        "loss.alpha: [unclosed\n": "not valid YAML",
    }
    for text, message in cases.items():
        space.write_text(text)
        args = tune_args(tmp_path / "in", tmp_path / "tune", "--space", str(space))
        assert main(args) == 2
        err = capsys.readouterr().err
        assert str(space) in err and message in err, err
    assert not (tmp_path / "tune").exists()


def test_space_values_map_onto_the_config(tmp_path):
    base = get_preset("fast-inpaint")
    space = tmp_path / "space.yaml"
    space.write_text(
        "loss.gamma: {loguniform: [1.0e-5, 0.1]}\n"
        "model.patches.scales: {choice: [[1, 2], [1, 2, 4]]}\n"
        "optim.steps: {int: [10, 30]}\n"
        "model.encoding.scale: 4\n"
    )
    params = load_space(space, base)
    assert [p.searched for p in params] == [True, True, True, False]
    tune_space = to_tune(params)
    assert tune_space["model.encoding.scale"] == 4
    assert tune_space["model.patches.scales"].categories == ["1,2", "1,2,4"]  # Optuna-safe
    config = apply_params(
        base, {"model.patches.scales": "1,2", "optim.steps": 12.0, "model.encoding.scale": 4}
    )
    assert isinstance(config, Config) and config.model.patches.scales == (1, 2)
    assert config.optim.steps == 12 and isinstance(config.model.encoding.scale, float)
    assert config.loss == base.loss and config.model.hidden == base.model.hidden
    extended = [p.key for p in resolve_space("extended", base)]
    assert extended[:5] == [p.key for p in resolve_space(None, base)]
    assert {"model.encoding.scale", "model.patches.scales", "optim.steps"} <= set(extended)
