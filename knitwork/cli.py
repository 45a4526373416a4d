"""The ``knitwork`` command: thin argument parsing around the core.

knitwork fit IMAGE --task inpaint|denoise|sr -o OUT.png   restore one image
knitwork restore INPUT OUTPUT --task inpaint|denoise|sr    a folder or s3:// prefix on Ray
knitwork render MODEL.pt -o OUT.png --size WxH          redraw a saved model at any size
knitwork presets [show NAME]                            list presets or print one as YAML
knitwork bench quality --suite inpaint|denoise|sr       quality beside baselines (docs/benchmarks)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from knitwork import io as kio
from knitwork.checkpoint import load_model, render, save_model
from knitwork.config import TASKS, Config, as_baseline
from knitwork.fit import NonFiniteLossError, fit
from knitwork.presets import PRESETS, default_preset, get_preset, load_preset_file, to_yaml
from knitwork.progress import progress_callback
from knitwork.report import comparison, fit_metrics, learned_kernel, save_kernel
from knitwork.tasks import Observation, degrade, observe, sr_observation
from pipeline.cli import add_bench, add_restore
from tune.compare_cli import add_compare
from tune.search_cli import add_tune

_FIT_HELP = """\
Fit one Neural Knitwork to IMAGE and write the restored image to OUT.

Inpainting needs to know the hole: --mask M (white = hole, black = known), or transparent pixels
of IMAGE's alpha channel, or --synthetic (cut a seeded square hole of --fill-ratio from a clean
IMAGE). Denoising restores IMAGE as it is, or with --synthetic first adds seeded Gaussian noise
of --sigma (0-255 scale) to a clean IMAGE. Super-resolution (--task sr) enlarges IMAGE
--scale times, with a known --kernel (delta, gaussian:SIGMA, gaussian:SX,SY,THETA, FILE.npy) or
a learned one (blind, the default); with --synthetic, IMAGE is the clean high-resolution image,
cropped to a multiple of --scale and downsampled by --degrade-kernel. With --synthetic the
result is scored against IMAGE (PSNR/SSIM on the whole image and on the hole; see
docs/metrics.md).

examples:
  knitwork fit photo.png --task inpaint --mask hole.png -o restored.png
  knitwork fit examples/images/butterfly.png --task inpaint --synthetic --fill-ratio 0.04 \\
      --metrics-json metrics.json -o out/butterfly.png
  knitwork fit noisy.png --task denoise --preset paper-denoise -o clean.png
  knitwork fit small.png --task sr --scale 4 --save-kernel kernel.npy -o big.png
"""


def add_fit_options(p: argparse.ArgumentParser, clean: str) -> None:
    """Options shared by `fit` and `restore`: task, configuration, seed, degradation."""
    p.add_argument("--task", required=True, choices=TASKS, help="what to restore")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="named preset (default: fast-TASK; see `knitwork presets`)")
    group.add_argument("--preset-file", help="YAML preset (full config, or `base: NAME` + changes)")
    p.add_argument("--steps", type=int, help="override the preset's number of steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and degradation [0]")
    p.add_argument("--baseline", choices=["mlp"], help="fit the conventional coordinate MLP")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")
    p.add_argument("--synthetic", action="store_true", help=f"{clean} is clean: degrade, score")
    p.add_argument("--fill-ratio", type=float, default=0.02, help="synthetic hole area [0.02]")
    p.add_argument("--sigma", type=float, default=25.0, help="synthetic noise std, 0-255 [25]")
    p.add_argument("--scale", type=int, default=2, help="sr: integer upscaling factor [2]")
    p.add_argument(
        "--kernel",
        default="learned",
        help="sr: the downsampling kernel: learned (blind), delta, gaussian:SIGMA, "
        "gaussian:SX,SY,THETA (degrees) or FILE.npy [learned]",
    )
    p.add_argument(
        "--degrade-kernel",
        help="sr with --synthetic: the kernel that makes the LR input "
        "[--kernel's, or delta when learning]",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=kio.DEFAULT_MAX_PIXELS,
        help=f"refuse larger images [{kio.DEFAULT_MAX_PIXELS}]",
    )


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="restore one image",
        description=_FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="input image (PNG, JPEG, TIFF, WebP; 8 or 16 bit)")
    p.add_argument("-o", "--output", required=True, help="where to write the restored image")
    p.add_argument("--mask", help="inpainting mask image: white = hole to fill, black = known")
    add_fit_options(p, clean="IMAGE")
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


def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="draw a saved model at any resolution")
    p.add_argument("model", help="a model written by `knitwork fit --save-model`")
    p.add_argument("-o", "--output", required=True, help="output image")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", help="WxH in pixels (default: the fitted image's size)")
    size.add_argument("--scale", type=float, help="multiply the fitted size by this")
    p.set_defaults(run=run_render)


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list presets, or print one as YAML")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="preset to show")
    p.set_defaults(run=run_presets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knitwork",
        description="Neural Knitworks: restore images by fitting a patch-based coordinate MLP.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_fit(sub)
    add_restore(sub)
    add_bench(sub)
    add_compare(sub)
    add_tune(sub)
    _add_render(sub)
    _add_presets(sub)
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The config and a label for it, from --preset/--preset-file, --steps, --baseline."""
    if args.preset_file:
        config, label = load_preset_file(args.preset_file), str(args.preset_file)
    else:
        label = args.preset or default_preset(args.task)
        config = get_preset(label)
    if args.steps is not None:
        config = config.with_steps(args.steps)
    if args.device:
        config = config.replace(optim=dataclasses.replace(config.optim, device=args.device))
    if args.baseline == "mlp":
        config, label = as_baseline(config), f"{label} (mlp baseline)"
    return config, label


def build_observation(args: argparse.Namespace) -> tuple[Observation, np.ndarray | None, int]:
    """The observation, the ground truth (with --synthetic) and the input's bit depth."""
    loaded = kio.load_image(args.image, max_pixels=args.max_pixels)
    pixels, shape = loaded.pixels, loaded.pixels.shape[:2]
    if args.task == "sr":
        obs, truth = sr_observation(
            pixels, args.scale, args.kernel, args.synthetic, args.seed, args.degrade_kernel
        )
        return obs, truth, loaded.bit_depth
    known = kio.load_mask(args.mask, shape, max_pixels=args.max_pixels) if args.mask else None
    if args.task == "inpaint" and known is None and loaded.alpha is not None:
        known = kio.known_from_alpha(loaded)
    if not args.synthetic:
        if args.task == "inpaint" and known is None:
            raise ValueError(
                f"{args.image}: inpainting needs to know the hole: pass --mask, give the image "
                "an alpha channel (transparent = hole), or use --synthetic on a clean image"
            )
        return observe(args.task, pixels, known), None, loaded.bit_depth
    if args.task == "inpaint" and known is not None:
        obs = observe("inpaint", pixels * known[:, :, None], known)
    else:
        obs = degrade(args.task, pixels, args.seed, fill_ratio=args.fill_ratio, sigma=args.sigma)
    return obs, pixels, loaded.bit_depth


def run_fit(args: argparse.Namespace) -> int:
    config, label = resolve_config(args)
    obs, truth, bit_depth = build_observation(args)
    h, w, c = obs.image.shape
    print(
        f"{args.image}: {w}×{h}, {args.task}, preset {label}, {config.optim.steps} steps",
        file=sys.stderr,
    )
    callback, close = progress_callback(config.optim.steps, enabled=not args.quiet)
    try:
        result = fit(
            obs,
            config,
            seed=args.seed,
            on_step=callback,
            ground_truth=truth,
            keep_known=not args.raw_output,
        )
    finally:
        close()
    depth = 16 if bit_depth == 16 and c == 1 else 8
    kio.save_image(args.output, result.image, bit_depth=depth)
    metrics = fit_metrics(result, obs, truth)
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
    shown = {k: v for k, v in metrics.items() if v is not None and k in _SHOWN}
    print(f"wrote {args.output}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    return 0


_SHOWN = ("psnr", "ssim", "psnr_hole", "ssim_hole", "reference_psnr", "seconds")


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 512x384 (W×H); got {text!r}") from None
    return w, h


def run_render(args: argparse.Namespace) -> int:
    model, _, meta = load_model(args.model)
    w, h = meta["width"], meta["height"]
    if args.size:
        w, h = _parse_size(args.size)
    elif args.scale:
        w, h = max(1, round(w * args.scale)), max(1, round(h * args.scale))
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
