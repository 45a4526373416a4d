"""The `knitwork` command, run as a user runs it: a subprocess of the installed script."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from knitwork.io import load_image
from knitwork.masks import text_mask
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


def test_synthetic_text_hole_is_the_seeded_text_mask(clean_png, tmp_path):
    out_png, seen, metrics = tmp_path / "o.png", tmp_path / "input.png", tmp_path / "m.json"
    args = ["fit", clean_png, "--task", "inpaint", "--synthetic", "--hole", "text"]
    args += ["--fill-ratio", "0.1", "--seed", "4", "--steps", "2", "--quiet", "-o", out_png]
    result = run(*args, "--save-input", seen, "--metrics-json", metrics)
    assert result.returncode == 0, result.stderr
    known = text_mask(32, 32, 0.1, seed=4)
    pixels = load_image(seen).pixels
    assert (pixels[~known] == 0).all() and (pixels[known] > 0).any()
    assert isinstance(json.loads(metrics.read_text())["psnr_hole"], float)
    assert load_image(out_png).pixels.shape == (32, 32, 3)


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
    assert "steps: 1000" in shown.stdout
    preset.write_text(shown.stdout.replace("steps: 1000", "steps: 2"))
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
    assert data["scale"] == 2 and data["kernel"] == "estimated" and data["psnr_hole"] is None
    assert isinstance(data["psnr"], float) and isinstance(data["reference_psnr"], float)
    assert load_image(out).pixels.shape == (32, 32, 3)  # the clean image's size
    kernel = np.load(tmp_path / "k.npy")
    assert kernel.shape == (13, 13) and load_image(tmp_path / "k.png").pixels.shape[0] == 13 * 12
    assert load_image(tmp_path / "sbs.png").pixels.shape == (32, 3 * 32 + 8, 3)


def test_bad_kernel_spec_is_a_clear_error(clean_png, tmp_path):
    result = run("fit", clean_png, "--task", "sr", "--kernel", "box", "-o", tmp_path / "o.png")
    assert result.returncode == 2 and "kernel 'box'" in result.stderr


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command's stderr, asserted to be one `error: ...` line and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "mps"])
def test_an_invalid_device_is_one_line_naming_the_option_and_the_choices(device, clean_png):
    result = run("fit", clean_png, "--task", "denoise", "--device", device, "-o", "o.png")
    line = one_line_error(result)
    assert "--device" in line and "auto, cpu, cuda or cuda:N" in line and repr(device) in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_asked_for_without_cuda_names_the_option(clean_png, tmp_path):
    result = run(
        "fit", clean_png, "--task", "denoise", "--device", "cuda", "-o", tmp_path / "o.png"
    )
    line = one_line_error(result)
    assert "--device" in line and "CUDA is not available" in line and "cpu" in line


def _ctrl_c_on() -> None:
    """In the child: Ctrl-C's default action, as in a terminal. A runner started in the
    background by a shell without job control passes SIGINT on ignored, and Python then never
    raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_fit_prints_interrupted_and_exits_130(clean_png, tmp_path):
    command = [*KNITWORK, "fit", str(clean_png), "--task", "denoise", "--steps", "1000000"]
    command += ["--device", "cpu", "-o", str(tmp_path / "o.png")]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_on
    )
    seen = ""
    while "fit:" not in seen:  # the progress bar: the fit has started stepping
        char = process.stderr.read(1)
        assert char, f"the fit ended before it was interrupted: {seen}"
        seen += char
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    stderr = seen + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.rstrip().splitlines()[-1] == "interrupted"
    assert not (tmp_path / "o.png").exists()


def test_ctrl_c_while_the_command_starts_is_no_traceback_either(clean_png, tmp_path):
    script = Path(sys.executable).parent / "knitwork"  # the console script, as a user runs it
    command = [script, "fit", clean_png, "--task", "denoise", "-o", tmp_path / "o.png"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_on)
    time.sleep(0.5)  # Python is up, the libraries (torch: seconds) still loading
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.rstrip().splitlines()[-1] == "interrupted"


@pytest.mark.parametrize(
    "size, task, extra",
    [(1, "denoise", []), (1, "sr", []), (1, "inpaint", ["--synthetic"])],
)
def test_a_tiny_image_is_refused_naming_the_file(size, task, extra, tmp_path):
    src = tmp_path / "dot.png"
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(src)
    result = run("fit", src, "--task", task, *extra, "--steps", "2", "-o", tmp_path / "o.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {src}: " in result.stderr and "1×1" in result.stderr


def test_a_fully_transparent_image_is_refused_naming_the_file(tmp_path):
    src = tmp_path / "clear.png"
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), "RGBA").save(src)
    result = run("fit", src, "--task", "inpaint", "--steps", "2", "-o", tmp_path / "o.png")
    line = one_line_error(result)
    assert line.startswith(f"error: {src}: ") and "every pixel is transparent" in line


@pytest.mark.parametrize("option", ["-o", "--side-by-side", "--save-input"])
def test_an_output_format_we_cannot_write_is_refused_before_the_fit(option, clean_png, tmp_path):
    outputs = {"-o": tmp_path / "o.png", option: tmp_path / "result.gif"}
    args = [a for pair in outputs.items() for a in pair]
    result = run("fit", clean_png, "--task", "denoise", "--synthetic", "--steps", "2", *args)
    line = one_line_error(result)  # no other line: the fit never started
    assert "result.gif" in line and "'.gif'" in line and ".png" in line and ".tiff" in line
    assert not any(p.exists() for p in outputs.values())


def test_a_16_bit_grey_image_can_be_restored_to_jpeg(tmp_path):
    grey = (example_image("woman", 16).mean(axis=2) * 65535).astype(np.uint16)
    src, out = tmp_path / "grey16.png", tmp_path / "out.jpg"
    Image.fromarray(grey).save(src)
    result = run("fit", src, "--task", "denoise", "--steps", "1", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert load_image(out).pixels.shape == (16, 16, 1) and load_image(out).bit_depth == 8


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    src = folder / "small.png"
    Image.fromarray((example_image("head", 16) * 255).round().astype(np.uint8)).save(src)
    result = run("fit", src, "--task", "denoise", "--steps", "1", "--quiet", "-o", folder / "o.png",
                 "--save-model", folder / "m.pt")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder / "m.pt"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "0"], "--scale must be a positive number; got 0"),
        (["--scale", "-2"], "--scale must be a positive number; got -2"),
        (["--scale", "nan"], "--scale must be a positive number; got nan"),
        (["--scale", "0.001"], "--scale 0.001 makes the image 0×0"),
        (["--size", "0x8"], "--size must be two positive whole numbers, e.g. 512x384"),
        (["--size", "8x-8"], "--size must be two positive whole numbers"),
        (["-o", "big.gif"], "unsupported extension '.gif'"),
    ],
)
def test_render_refuses_sizes_it_cannot_draw(args, message, saved_model, tmp_path):
    out = tmp_path / "big.png"
    result = run("render", saved_model, "-o", out, *args)
    line = one_line_error(result)
    assert message in line
    assert not out.exists()


def test_render_scales_the_fitted_size(saved_model, tmp_path):
    result = run("render", saved_model, "--scale", "1.5", "-o", tmp_path / "big.png")
    assert result.returncode == 0, result.stderr
    assert load_image(tmp_path / "big.png").pixels.shape == (24, 24, 3)


def test_synthetic_sr_scores_a_learned_kernel_against_the_true_one(clean_png, tmp_path):
    """Blind: kernel_error and its delta start's are finite floats ≥ 0; a known kernel (the
    per-image random one, given to the fit) has none; a denoising fit has no such keys."""
    common = ("--synthetic", "--steps", "2", "--quiet", "--seed", "3")
    scored = {}
    for label, kernel in (("blind", "learned"), ("known", "random")):
        metrics = tmp_path / f"{label}.json"
        result = run(
            "fit", clean_png, "--task", "sr", "--scale", "2", "--kernel", kernel,
            "--degrade-kernel", "random", *common, "-o", tmp_path / f"{label}.png",
            "--metrics-json", metrics,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        scored[label] = json.loads(metrics.read_text()), result.stdout
    blind, printed = scored["blind"]
    assert blind["kernel"] == "estimated"  # fast-sr estimates it first
    for key in ("kernel_error", "kernel_error_start"):
        assert isinstance(blind[key], float) and np.isfinite(blind[key]) and blind[key] >= 0
    assert "kernel_error=" in printed and "kernel_error_start=" in printed
    known, _ = scored["known"]
    assert known["kernel"] == "known"
    assert known["kernel_error"] is None and known["kernel_error_start"] is None

    metrics = tmp_path / "denoise.json"
    result = run(
        "fit", clean_png, "--task", "denoise", *common, "-o", tmp_path / "d.png",
        "--metrics-json", metrics,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "kernel_error" not in json.loads(metrics.read_text())
