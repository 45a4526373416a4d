"""`knitwork fit`, `knitwork render` and `knitwork presets`: one image, in this process."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from knitwork import io as kio
from knitwork.checkpoint import load_model, render, save_model
from knitwork.config import Config
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.presets import PRESETS, get_preset, to_yaml
from knitwork.progress import progress_callback
from knitwork.report import SCORES, comparison, fit_metrics, learned_kernel, save_kernel
from knitwork.result import FitResult
from knitwork.tasks import Observation
from knitwork_cli.options import (
    add_config_options,
    add_degradation_options,
    config_from,
    degradation_from,
)

_FIT_HELP = """\
Fit one Neural Knitwork to IMAGE and write the restored image to OUT.

Inpainting needs to know the hole: --mask M (white = hole, black = known), or transparent pixels
of IMAGE's alpha channel, or --synthetic (cut a seeded hole of --fill-ratio from a clean IMAGE:
the paper's square, or with --hole scratch|text thin scratches or a text overlay). Denoising
restores IMAGE as it is, or with --synthetic first adds seeded Gaussian noise of --sigma (0-255
scale) to a clean IMAGE. Super-resolution (--task sr) enlarges IMAGE --scale times, with a
known --kernel (delta, gaussian:SIGMA, gaussian:SX,SY,THETA, FILE.npy) or a learned one (blind,
the default); with --synthetic, IMAGE is the clean high-resolution image, cropped to a multiple
of --scale and downsampled by --degrade-kernel. With --synthetic the result is scored against
IMAGE (PSNR/SSIM on the whole image and on the hole; see docs/metrics.md), and a learned kernel
against the true one: kernel_error, and kernel_error_start, what the delta start scores (0 = the
truth up to a whole-pixel shift).

examples:
  knitwork fit photo.png --task inpaint --mask hole.png -o restored.png
  knitwork fit examples/images/butterfly.png --task inpaint --synthetic --fill-ratio 0.04 \\
      --metrics-json metrics.json -o out/butterfly.png
  knitwork fit examples/images/butterfly.png --task inpaint --synthetic --hole text \\
      --fill-ratio 0.05 --side-by-side out/text.png -o out/butterfly-text.png
  knitwork fit noisy.png --task denoise --preset paper-denoise -o clean.png
  knitwork fit small.png --task sr --scale 4 --save-kernel kernel.npy -o big.png
"""


SHOWN_METRICS = (*SCORES, "kernel_error_start", "seconds", "crop")


def add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="restore one image",
        description=_FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="input image (PNG, JPEG, TIFF, WebP; 8 or 16 bit)")
    p.add_argument("-o", "--output", required=True, help="where to write the restored image")
    p.add_argument("--mask", help="inpainting mask image: white = hole to fill, black = known")
    add_degradation_options(p, clean="IMAGE")
    add_config_options(p)
    p.add_argument("--metrics-json", help="write metrics, timing and size to this JSON file")
    p.add_argument("--save-model", help="write the fitted model here (.pt; see `render`)")
    p.add_argument("--save-input", help="write the degraded input here (with --synthetic)")
    p.add_argument("--save-kernel", help="sr: write the learned kernel (.npy, and a .png)")
    p.add_argument("--side-by-side", help="write input | restored [| ground truth] as one PNG")
    p.add_argument(
        "--raw-output",
        action="store_true",
        help="inpainting: network output on known pixels too (paper)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_fit)


def add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="draw a saved model at any resolution")
    p.add_argument("model", help="a model written by `knitwork fit --save-model`")
    p.add_argument("-o", "--output", required=True, help="output image")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", help="WxH in pixels (default: the fitted image's size)")
    size.add_argument("--scale", type=float, help="multiply the fitted size by this")
    p.set_defaults(run=run_render)


def add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list presets, or print one as YAML")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="preset to show")
    p.set_defaults(run=run_presets)


def observation_from(
    args: argparse.Namespace, degradation: Degradation
) -> tuple[Observation, np.ndarray | None, int]:
    """The observation, the ground truth (with --synthetic) and the input's bit depth."""
    loaded = kio.load_image(args.image, max_pixels=args.max_pixels)
    pixels, task, known = loaded.pixels, degradation.task, None
    if task != "sr" and args.mask:
        known = kio.load_mask(args.mask, pixels.shape[:2], max_pixels=args.max_pixels)
    if task == "inpaint" and known is None and loaded.alpha is not None:
        known = kio.known_from_alpha(loaded)
    if args.synthetic:
        obs, truth = degradation.apply(pixels, args.seed, known)
        return obs, truth, loaded.bit_depth
    if task == "inpaint" and known is None:
        raise ValueError(
            f"{args.image}: inpainting needs to know the hole: pass --mask, give the image "
            "an alpha channel (transparent = hole), or use --synthetic on a clean image"
        )
    return degradation.observe(pixels, known), None, loaded.bit_depth


def check_device_here(device: str, option: str) -> None:
    """A CUDA device asked for on a machine without it (or without that many GPUs) is refused
    before the image is read, naming where it was asked for (``--device`` or the preset)."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        found = f"only {count} CUDA device(s)" if count else "CUDA is not available here"
        raise ValueError(f"{option} {device}: {found}; use --device cpu, auto or cuda:N")


def run_fit(args: argparse.Namespace) -> int:
    degradation = degradation_from(args)
    config, label = config_from(args, degradation.task)
    check_device_here(config.optim.device, "--device" if args.device else "optim.device")
    for output in (args.output, args.save_input, args.side_by_side):
        if output:
            kio.output_format(output)  # refused now, not after the fit
    with kio.naming(args.image):
        obs, truth, bit_depth = observation_from(args, degradation)
        h, w, c = obs.image.shape
        print(
            f"{args.image}: {w}×{h}, {args.task}, preset {label}, {config.optim.steps} steps",
            file=sys.stderr,
        )
        result = _fit(args, obs, config, truth)
    depth = 16 if bit_depth == 16 and c == 1 and kio.holds_16_bit(args.output) else 8
    kio.save_image(args.output, result.image, bit_depth=depth)
    true_kernel = degradation.true_kernel(args.seed) if _scored_sr(args, degradation) else None
    metrics = fit_metrics(result, obs, truth, true_kernel)
    if args.save_model:
        save_model(result, args.save_model)
    if args.save_input:
        kio.save_image(args.save_input, obs.image)
    if args.side_by_side:
        kio.save_image(args.side_by_side, comparison(obs, result, truth))
    kernel = learned_kernel(result)
    if args.save_kernel and kernel is not None:
        save_kernel(args.save_kernel, kernel)
    if args.metrics_json:
        with kio.atomic_file(args.metrics_json) as handle:
            handle.write(json.dumps(metrics, indent=2).encode("utf-8"))
    shown = {k: v for k, v in metrics.items() if v is not None and k in SHOWN_METRICS}
    print(f"wrote {args.output}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    return 0


def _scored_sr(args: argparse.Namespace, degradation: Degradation) -> bool:
    """A synthetic super-resolution fit: its true kernel is known, so its learned one scores."""
    return args.synthetic and degradation.task == "sr"


def _fit(
    args: argparse.Namespace, obs: Observation, config: Config, truth: np.ndarray | None
) -> FitResult:
    callback, close = progress_callback(config.optim.steps, enabled=not args.quiet)
    try:
        return fit(
            obs,
            config,
            seed=args.seed,
            on_step=callback,
            ground_truth=truth,
            keep_known=not args.raw_output,
        )
    finally:
        close()


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _parse_size(text: str) -> tuple[int, int]:
    message = f"--size must be two positive whole numbers, e.g. 512x384 (W×H); got {text!r}"
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(message) from None
    if w < 1 or h < 1:
        raise ValueError(message)
    return w, h


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    w, h = round(width * scale), round(height * scale)
    if w < 1 or h < 1:
        raise ValueError(
            f"--scale {scale:g} makes the image {w}×{h} (fitted at {width}×{height}): "
            "use a larger scale"
        )
    return w, h


def run_render(args: argparse.Namespace) -> int:
    kio.output_format(args.output)
    size = _parse_size(args.size) if args.size else None
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        raise ValueError(f"--scale must be a positive number; got {args.scale:g}")
    model, _, meta = load_model(args.model)
    w, h = meta["width"], meta["height"]
    if size:
        w, h = size
    elif args.scale is not None:
        w, h = _scaled(w, h, args.scale)
    kio.save_image(args.output, render(model, h, w))
    print(f"wrote {args.output} ({w}×{h})")
    return 0


def run_presets(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise ValueError(f"`knitwork presets show NAME`: NAME is one of {', '.join(PRESETS)}")
        print(to_yaml(get_preset(args.name)), end="")
        return 0
    for name, cfg in PRESETS.items():
        p = cfg.model.patches
        scales = ",".join(map(str, p.scales))
        print(
            f"{name:15s} {cfg.optim.steps:5d} steps, {p.size}×{p.size} patches at scales "
            f"{scales}, reconstructor {cfg.model.reconstructor}"
        )
    return 0
