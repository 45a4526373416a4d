"""One image's work as a Ray task runs it (``process``), called directly: a bad input comes back
as a failed record whose error names the input file and says what is wrong."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from knitwork.degradation import Degradation
from knitwork.kernels import delta_kernel, kernel_error, random_kernel
from knitwork.presets import get_preset
from pipeline.storage import LocalStorage
from pipeline.worker import Job, process
from tests.conftest import example_image, shrink


def job(folder: Path, name: str, task: str, synthetic: bool = False) -> Job:
    return Job(
        name=name,
        input=LocalStorage(folder / "in"),
        output=LocalStorage(folder / "out"),
        config=shrink(get_preset(f"fast-{task}"), steps=2),
        degradation=Degradation(task=task),
        seed=0,
        config_hash="test",
        synthetic=synthetic,
    )


def test_a_fully_transparent_input_names_the_input_file(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), "RGBA").save(tmp_path / "in" / "clear.png")
    record = process(job(tmp_path, "clear.png", "inpaint")).record
    assert record.status == "failed"
    assert f"{tmp_path / 'in' / 'clear.png'}: every pixel is transparent" in record.error
    assert "Traceback" not in record.error and not (tmp_path / "out").exists()


def test_a_one_pixel_input_names_the_input_file(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(tmp_path / "in" / "dot.png")
    for task, synthetic in (("denoise", False), ("inpaint", True)):
        record = process(job(tmp_path, "dot.png", task, synthetic)).record
        assert record.status == "failed"
        assert f"{tmp_path / 'in' / 'dot.png'}: " in record.error and "1×1" in record.error


def test_a_synthetic_blind_sr_record_scores_its_learned_kernel(tmp_path):
    """kernel_error (the learned kernel against the image's random true kernel) and the delta
    start's, in the record's metrics; None when the fit is given the kernel."""
    (tmp_path / "in").mkdir()
    pixels = (example_image("head", 24) * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "h.png")
    base = replace(job(tmp_path, "h.png", "sr", synthetic=True), seed=11)
    blind = replace(base, degradation=Degradation(task="sr", degrade_kernel="random"))
    metrics = process(blind).record.metrics
    for key in ("kernel_error", "kernel_error_start"):
        assert isinstance(metrics[key], float) and np.isfinite(metrics[key]) and metrics[key] >= 0
    truth = random_kernel(11, 2)
    assert metrics["kernel_error_start"] == kernel_error(delta_kernel(), truth)

    known = replace(base, degradation=Degradation(task="sr", kernel="random"))
    metrics = process(known).record.metrics
    assert metrics["kernel"] == "known" and metrics["kernel_error"] is None
