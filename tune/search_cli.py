"""`knitwork tune`: argument parsing for the hyperparameter search (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import sys

from knitwork.config import TASKS
from knitwork.io import DEFAULT_MAX_PIXELS

_HELP = """\
Search the loss weights and learning rates (or any config field) for the settings that restore
a set of clean images best. Each image under --images is degraded with the seeded degradation
of `knitwork restore --synthetic` (--fill-ratio, --sigma, --scale/--kernel); every trial fits
all of them with one sampled config and reports the objective, the mean PSNR over the images
(hole PSNR for inpainting), every few steps, so that ASHA stops poor trials early.

The default space is log-uniform over loss.alpha, loss.beta, loss.gamma, optim.lr and
optim.d_lr on top of --preset (default fast-TASK); --space extended adds the Fourier scale,
the patch scales and the number of steps, and --space FILE.yaml defines any other (see
docs/tune.md). Trials run on Ray (a local cluster unless --address or RAY_ADDRESS), one CPU
each; Tune keeps its state in --storage/--name (local or s3://), and --resume finishes an
interrupted search from there.

Outputs, in --output (default: the search's folder, STORAGE/NAME): best-TASK.yaml (a preset
for `knitwork fit|restore --preset-file`), trials.csv, objective.png. MLflow: a parent run per
search (tag kind=search) and a child run per trial (kind=trial, trial_id), in --experiment
(default knitwork-TASK) at MLFLOW_TRACKING_URI (default sqlite:///mlflow.db).

examples:
  knitwork tune --task inpaint --images examples/images --num-samples 16 --steps 300
  knitwork tune --task denoise --images s3://photos/clean --space space.yaml --search optuna \\
      --storage s3://experiments/tune --address ray://head:10001 --gpus-per-trial 0.25
  knitwork tune --task inpaint --images examples/images --resume     # after an interruption
  knitwork fit photo.png --task inpaint --mask hole.png \\
      --preset-file tune-results/tune-inpaint/best-inpaint.yaml -o restored.png
"""


def add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyperparameters on Ray Tune",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASKS, help="what the search restores")
    p.add_argument(
        "--images", required=True, metavar="URI", help="clean images: folder or s3://bucket/prefix"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="base preset (default: fast-TASK)")
    group.add_argument("--preset-file", metavar="FILE", help="base preset as YAML")
    p.add_argument(
        "--steps", type=int, metavar="N", help="override the base preset's steps per trial"
    )
    p.add_argument(
        "--space",
        metavar="default|extended|FILE.yaml",
        help="default: α, β, γ, both learning rates; extended: also the Fourier scale, patch "
        "scales and steps; or a YAML space (docs/tune.md) [default]",
    )
    p.add_argument("--num-samples", type=int, metavar="N", default=8, help="trials to run [8]")
    p.add_argument("--scheduler", choices=["asha", "none"], default="asha", help="[asha]")
    p.add_argument("--search", choices=["random", "optuna"], default="random", help="[random]")
    p.add_argument(
        "--reports", type=int, metavar="N", default=8, help="objective reports per trial [8]"
    )
    p.add_argument("--seed", type=int, default=0, help="base seed of images and sampler [0]")
    p.add_argument("--fill-ratio", type=float, default=0.02, help="inpainting hole area [0.02]")
    p.add_argument("--sigma", type=float, default=25.0, help="noise std, 0-255 scale [25]")
    p.add_argument("--scale", type=int, default=2, help="sr: upscaling factor [2]")
    p.add_argument("--kernel", default="learned", help="sr: kernel the fit assumes [learned]")
    p.add_argument("--degrade-kernel", help="sr: kernel that makes the LR inputs [delta]")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=argparse.SUPPRESS)
    p.add_argument(
        "--storage", default="tune-results", metavar="URI", help="Tune state [tune-results]"
    )
    p.add_argument("--name", help="the search's folder under --storage [tune-TASK]")
    p.add_argument("--resume", action="store_true", help="finish the search in --storage/--name")
    p.add_argument("--output", metavar="DIR", help="where to write the outputs [STORAGE/NAME]")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="F", help="[1]")
    p.add_argument(
        "--gpus-per-trial", type=float, default=0.0, metavar="F", help="used only if present [0]"
    )
    p.add_argument(
        "--max-concurrent", type=int, metavar="N", help="trials at once [as resources allow]"
    )
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS or local)")
    p.add_argument(
        "--s3-endpoint-url", metavar="URL", help="S3 endpoint (MinIO, Ceph); else AWS_ENDPOINT_URL"
    )
    p.add_argument("--experiment", help="MLflow experiment [knitwork-TASK]")
    p.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    p.set_defaults(run=run_tune, device=None, baseline=None)


def _check(args: argparse.Namespace) -> None:
    if args.num_samples < 1 or args.reports < 1:
        raise ValueError("--num-samples and --reports must be ≥ 1")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise ValueError("--cpus-per-trial must be > 0 and --gpus-per-trial ≥ 0")


def run_tune(args: argparse.Namespace) -> int:
    from knitwork.cli import resolve_config
    from tune.outputs import summary_table
    from tune.search import SearchOptions, new_definition, run_search
    from tune.space import resolve_space

    _check(args)
    base, label = resolve_config(args)
    space = resolve_space(args.space, base)
    definition = new_definition(
        args.task, args.images, base, label, space,
        num_samples=args.num_samples, scheduler=args.scheduler, search=args.search,
        reports=args.reports, seed=args.seed, fill_ratio=args.fill_ratio, sigma=args.sigma,
        scale=args.scale, kernel=args.kernel, degrade_kernel=args.degrade_kernel,
        max_pixels=args.max_pixels, experiment=args.experiment or f"knitwork-{args.task}",
    )  # fmt: skip
    options = SearchOptions(
        definition, storage=args.storage, name=args.name, output=args.output,
        resume=args.resume, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
        address=args.address, s3_endpoint_url=args.s3_endpoint_url, track=not args.no_tracking,
    )  # fmt: skip
    outcome = run_search(options)
    if outcome.interrupted:
        print(
            f"interrupted: Tune's state is saved in {outcome.experiment_path}; finish the "
            "search with the same command and --resume",
            file=sys.stderr,
        )
        return 130
    print(summary_table(outcome.rows, outcome.definition.params()))
    for name, where in outcome.files.items():
        print(f"wrote {where}" + ("  (best config)" if name.startswith("best-") else ""))
    if outcome.parent_run_id:
        print(f"MLflow: search run {outcome.parent_run_id}")
    return 0 if outcome.best is not None else 1
