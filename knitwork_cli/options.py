"""Options that several commands share, declared once, and the values they build: a Config
(preset, preset file, steps, seed, device, baseline), a Degradation (task, fill ratio, hole
shape, sigma, scale, kernels), cluster options (Ray) and tracking/storage options (MLflow, S3)."""

from __future__ import annotations

import argparse
import dataclasses

from knitwork import io as kio
from knitwork.config import TASKS, Config, as_baseline
from knitwork.degradation import HOLE_SHAPES, Degradation
from knitwork.fields import check_device
from knitwork.masks import MAX_FILL
from knitwork.presets import default_preset, get_preset, load_preset_file

DEFAULTS = Degradation(task="inpaint")  # the degradation options' defaults


def add_config_options(
    p: argparse.ArgumentParser,
    *,
    seed_help: str = "seed of the model and degradation [0]",
    device: bool = True,
    baseline: bool = True,
) -> None:
    """--preset | --preset-file, --steps, --seed [, --device] [, --baseline]."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="named preset (default: fast-TASK; see `knitwork presets`)")
    group.add_argument(
        "--preset-file", metavar="FILE", help="YAML preset (full config, or `base: NAME` + changes)"
    )
    p.add_argument("--steps", type=int, metavar="N", help="override the preset's number of steps")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    if device:
        p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")
    else:
        p.set_defaults(device=None)
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="peak memory of one fit, e.g. 4G; full-grid steps when they fit, else sampled "
        "crops, else a refusal before the fit starts [the preset's: auto = 80%% of free memory]",
    )
    if baseline:
        p.add_argument("--baseline", choices=["mlp"], help="fit the conventional coordinate MLP")
    else:
        p.set_defaults(baseline=None)


def config_from(args: argparse.Namespace, task: str) -> tuple[Config, str]:
    """The config and a label for it, from --preset/--preset-file, --steps, --device,
    --baseline."""
    if args.preset_file:
        config, label = load_preset_file(args.preset_file), str(args.preset_file)
    else:
        label = args.preset or default_preset(task)
        config = get_preset(label)
    if args.steps is not None:
        config = config.with_steps(args.steps)
    if args.device:
        config = config.with_device(check_device(args.device, "--device"))
    if args.max_memory:
        config = config.replace(optim=dataclasses.replace(config.optim, max_memory=args.max_memory))
    if args.baseline == "mlp":
        config, label = as_baseline(config), f"{label} (mlp baseline)"
    return config, label


def add_degradation_options(
    p: argparse.ArgumentParser, *, clean: str | None = "IMAGE", help_task: str = "what to restore"
) -> None:
    """--task and the degradation's fields; with ``clean`` also --synthetic (the input named
    ``clean`` is a clean image to degrade and score) and --max-pixels."""
    p.add_argument("--task", required=True, choices=TASKS, help=help_task)
    if clean:
        p.add_argument("--synthetic", action="store_true", help=f"{clean} is clean: degrade, score")
    d = DEFAULTS
    p.add_argument(
        "--fill-ratio",
        type=float,
        default=d.fill_ratio,
        help=f"synthetic hole area [{d.fill_ratio}]",
    )
    p.add_argument(
        "--hole",
        choices=HOLE_SHAPES,
        default=d.mask,
        help="inpainting, synthetic: the seeded hole: square (the paper's), scratch (thin "
        "strokes, as on an old print) or text (a caption or date stamp); scratch and text take "
        f"a --fill-ratio up to {MAX_FILL} [{d.mask}]",
    )
    p.add_argument(
        "--sigma", type=float, default=d.sigma, help=f"synthetic noise std, 0-255 [{d.sigma:g}]"
    )
    p.add_argument("--scale", type=int, default=d.scale, help=f"sr: upscaling factor [{d.scale}]")
    p.add_argument(
        "--kernel",
        default=d.kernel,
        help="sr: the downsampling kernel: learned (blind: learned with the image, or "
        "estimated from the input's spectrum first where the preset sets model.blind_kernel: "
        "estimate), delta, gaussian:SIGMA, "
        f"gaussian:SX,SY,THETA (degrees), FILE.npy, or random (synthetic inputs: a seeded "
        f"random anisotropic Gaussian per image, as DIV2KRK draws them) [{d.kernel}]",
    )
    p.add_argument(
        "--degrade-kernel",
        help="sr, synthetic: the kernel that makes the LR input, any --kernel value but "
        "learned [--kernel's, or delta when learning]",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=kio.DEFAULT_MAX_PIXELS,
        help=f"refuse larger images [{kio.DEFAULT_MAX_PIXELS}]" if clean else argparse.SUPPRESS,
    )


def degradation_from(args: argparse.Namespace) -> Degradation:
    return Degradation(
        task=args.task,
        fill_ratio=args.fill_ratio,
        mask=args.hole,
        sigma=args.sigma,
        scale=args.scale,
        kernel=args.kernel,
        degrade_kernel=args.degrade_kernel,
    )


def add_cluster_options(p: argparse.ArgumentParser, *, unit: str = "task") -> None:
    """Ray: --address, --cpus-per-UNIT, --gpus-per-UNIT, and --max-in-flight and --max-retries
    (tasks) or --max-concurrent (trials)."""
    p.add_argument(
        "--address",
        help="Ray cluster to join (ray://HOST:10001, HOST:6379, or auto: this machine's running "
        "cluster); default RAY_ADDRESS, else a local cluster on 127.0.0.1 started for this run",
    )
    p.add_argument(
        f"--cpus-per-{unit}", dest="cpus", type=float, default=1.0, metavar="F", help="[1]"
    )
    p.add_argument(
        f"--gpus-per-{unit}",
        dest="gpus",
        type=float,
        default=0.0,
        metavar="F",
        help="GPUs each, fractional allowed (0.25); used only if the cluster has them [0]",
    )
    p.add_argument(
        "--pack",
        type=int,
        default=0,
        metavar="K",
        help=f"images fitted together as one batched model in each {unit} (each result equals "
        "its solo fit; it pays on GPUs, not on CPUs); 0: automatic, 1 on CPUs, up to 64 small "
        "images on a GPU as memory allows [0]",
    )
    if unit == "task":
        p.add_argument(
            "--max-in-flight", dest="in_flight", type=int, help="tasks submitted at once [2 × CPUs]"
        )
        p.add_argument("--max-retries", type=int, default=2, help="retries of a lost task [2]")
    else:
        p.add_argument(
            "--max-concurrent", dest="in_flight", type=int, metavar="N",
            help="trials at once [as resources allow]",
        )  # fmt: skip
        p.set_defaults(max_retries=0)


def cluster_from(args: argparse.Namespace):
    from pipeline.cluster import ClusterOptions

    return ClusterOptions(
        address=args.address,
        cpus_per_task=args.cpus,
        gpus_per_task=args.gpus,
        max_in_flight=args.in_flight,
        max_retries=args.max_retries,
        pack=args.pack,
    )


def add_tracking_options(p: argparse.ArgumentParser, *, experiment: str) -> None:
    """MLflow's --experiment and --no-tracking, and S3's --s3-endpoint-url."""
    p.add_argument("--experiment", help=f"MLflow experiment [{experiment}]")
    p.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    p.add_argument(
        "--s3-endpoint-url", metavar="URL", help="S3 endpoint (MinIO, Ceph); else AWS_ENDPOINT_URL"
    )


def names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated list of names, or None when not given."""
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None
