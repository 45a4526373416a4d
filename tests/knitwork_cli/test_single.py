"""The `knitwork` command, run as a user runs it: a subprocess of the installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knitwork.io import load_image
from tests.conftest import example_image

KNITWORK = [sys.executable, "-m", "knitwork_cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KNITWORK, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def clean_png(tmp_path: Path) -> Path:
    path = tmp_path / "clean.png"
    Image.fromarray((example_image("head", 32) * 255).round().astype(np.uint8)).save(path)
    return path


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "knitwork"
    out = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "fit" in out.stdout and "render" in out.stdout


def test_fit_help_explains_masks_and_synthetic_mode():
    out = run("fit", "--help")
    assert out.returncode == 0
    for phrase in ("white = hole", "--synthetic", "--fill-ratio", "--metrics-json", "examples:"):
        assert phrase in out.stdout


def test_synthetic_inpainting_writes_everything_it_was_asked_for(clean_png, tmp_path):
    out_png = tmp_path / "out" / "restored.png"
    metrics = tmp_path / "metrics.json"
    args = ["fit", clean_png, "--task", "inpaint", "--synthetic", "--fill-ratio", "0.05"]
    args += ["--steps", "5", "-o", out_png, "--metrics-json", metrics, "--quiet"]
    args += ["--save-model", tmp_path / "m.pt", "--side-by-side", tmp_path / "sbs.png"]
    result = run(*args, "--save-input", tmp_path / "input.png")
    assert result.returncode == 0, result.stderr
    data = json.loads(metrics.read_text())
    for key in ("psnr", "ssim", "psnr_hole", "ssim_hole", "reference_psnr", "seconds"):
        assert isinstance(data[key], float), key
    assert data["steps"] == 5 and data["parameters"] > 100_000
    assert load_image(out_png).pixels.shape == (32, 32, 3)
    assert load_image(tmp_path / "sbs.png").pixels.shape == (32, 3 * 32 + 2 * 4, 3)
    assert load_image(tmp_path / "input.png").pixels.min() == 0  # the hole is black
    render = run("render", tmp_path / "m.pt", "--size", "48x40", "-o", tmp_path / "big.png")
    assert render.returncode == 0, render.stderr
    assert load_image(tmp_path / "big.png").pixels.shape == (40, 48, 3)


def test_denoising_metrics_have_null_hole_scores(clean_png, tmp_path):
    metrics = tmp_path / "m.json"
    args = ["fit", clean_png, "--task", "denoise", "--synthetic", "--sigma", "30"]
    result = run(
        *args,
        "--steps",
        "3",
        "--baseline",
        "mlp",
        "-o",
        tmp_path / "o.png",
        "--metrics-json",
        metrics,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(metrics.read_text())
    assert data["psnr_hole"] is None and data["ssim_hole"] is None
    assert data["method"] == "mlp" and data["parameters"] == 263_683
    assert 15 < data["reference_psnr"] < 25  # the noisy input's PSNR at σ 30
    assert "step" in result.stderr  # the progress bar


def test_alpha_channel_marks_the_hole(tmp_path):
    rgba = np.dstack([(example_image("bird", 32) * 255).astype(np.uint8), np.full((32, 32), 255)])
    rgba[10:16, 12:20, 3] = 0
    src = tmp_path / "holey.png"
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(src)
    before = src.read_bytes()
    out = tmp_path / "filled.png"
    result = run("fit", src, "--task", "inpaint", "--steps", "2", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    filled = np.asarray(Image.open(out))
    assert filled.shape == (32, 32, 3)
    np.testing.assert_array_equal(filled[0:10], rgba[0:10, :, :3])  # known pixels kept
    assert src.read_bytes() == before  # the input is never written


@pytest.mark.parametrize(
    "setup, message",
    [
        ("nomask", "inpainting needs to know the hole"),
        ("notimage", "not a recognised image"),
        ("missing", "file not found"),
        ("mask_size", "mask"),
        ("mask_full", "nothing to learn from"),
    ],
)
def test_bad_inputs_exit_2_with_the_file_and_the_problem(setup, message, clean_png, tmp_path):
    image, extra = clean_png, []
    if setup == "notimage":
        image = tmp_path / "notes.png"
        image.write_text("not a png")
    elif setup == "missing":
        image = tmp_path / "absent.png"
    elif setup.startswith("mask"):
        side = 16 if setup == "mask_size" else 32
        mask = tmp_path / "mask.png"
        Image.fromarray(np.full((side, side), 255, np.uint8)).save(mask)
        extra = ["--mask", mask]
        image = clean_png
    result = run("fit", image, "--task", "inpaint", "-o", tmp_path / "o.png", *extra)
    assert result.returncode == 2
    named = mask if setup.startswith("mask") else image
    assert str(named) in result.stderr and message in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_presets_show_gives_a_file_fit_accepts(clean_png, tmp_path):
    shown = run("presets", "show", "fast-denoise")
    assert shown.returncode == 0 and "encoding:" in shown.stdout
    preset = tmp_path / "mine.yaml"
    preset.write_text(shown.stdout.replace("steps: 300", "steps: 2"))
    result = run(
        "fit",
        clean_png,
        "--task",
        "denoise",
        "--preset-file",
        preset,
        "-o",
        tmp_path / "o.png",
        "--metrics-json",
        tmp_path / "m.json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 2
    listing = run("presets")
    assert all(name in listing.stdout for name in ("paper-inpaint", "fast-denoise"))


def test_sixteen_bit_grey_image_is_restored_as_sixteen_bit_grey(tmp_path):
    grey = (example_image("woman", 32).mean(axis=2) * 65535).astype(np.uint16)
    src, out = tmp_path / "grey16.png", tmp_path / "out16.png"
    Image.fromarray(grey).save(src)
    result = run("fit", src, "--task", "denoise", "--steps", "2", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    loaded = load_image(out)
    assert loaded.pixels.shape == (32, 32, 1) and loaded.bit_depth == 16


def test_blind_super_resolution_saves_its_kernel(clean_png, tmp_path):
    metrics, out = tmp_path / "sr.json", tmp_path / "big.png"
    result = run(
        "fit",
        clean_png,
        "--task",
        "sr",
        "--scale",
        "2",
        "--synthetic",
        "--degrade-kernel",
        "gaussian:1.0",
        "--steps",
        "3",
        "--quiet",
        "-o",
        out,
        "--metrics-json",
        metrics,
        "--save-kernel",
        tmp_path / "k.npy",
        "--side-by-side",
        tmp_path / "sbs.png",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(metrics.read_text())
    assert data["scale"] == 2 and data["kernel"] == "learned" and data["psnr_hole"] is None
    assert isinstance(data["psnr"], float) and isinstance(data["reference_psnr"], float)
    assert load_image(out).pixels.shape == (32, 32, 3)  # the clean image's size
    kernel = np.load(tmp_path / "k.npy")
    assert kernel.shape == (13, 13) and load_image(tmp_path / "k.png").pixels.shape[0] == 13 * 12
    assert load_image(tmp_path / "sbs.png").pixels.shape == (32, 3 * 32 + 8, 3)


def test_bad_kernel_spec_is_a_clear_error(clean_png, tmp_path):
    result = run("fit", clean_png, "--task", "sr", "--kernel", "box", "-o", tmp_path / "o.png")
    assert result.returncode == 2 and "kernel 'box'" in result.stderr
