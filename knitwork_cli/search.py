"""`knitwork tune`: the hyperparameter search on Ray Tune (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import sys

from knitwork_cli.options import (
    add_cluster_options,
    add_config_options,
    add_degradation_options,
    add_tracking_options,
    cluster_from,
    config_from,
    degradation_from,
)

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
interrupted search from there. Credentials in the S3 endpoint URL (http://KEY:SECRET@host)
are moved into AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the run (replacing a different
pair there), so that Tune's state holds no secret.

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
    add_degradation_options(p, clean=None, help_task="what the search restores")
    p.add_argument(
        "--images", required=True, metavar="URI", help="clean images: folder or s3://bucket/prefix"
    )
    add_config_options(
        p, seed_help="base seed of images and sampler [0]", device=False, baseline=False
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
    p.add_argument(
        "--storage", default="tune-results", metavar="URI", help="Tune state [tune-results]"
    )
    p.add_argument("--name", help="the search's folder under --storage [tune-TASK]")
    p.add_argument("--resume", action="store_true", help="finish the search in --storage/--name")
    p.add_argument("--output", metavar="DIR", help="where to write the outputs [STORAGE/NAME]")
    add_cluster_options(p, unit="trial")
    add_tracking_options(p, experiment="knitwork-TASK")
    p.set_defaults(run=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from knitwork_cli.environment import s3_credentials_to_environment
    from tune.outputs import summary_table
    from tune.search import SearchOptions, new_definition, run_search
    from tune.space import resolve_space

    if args.num_samples < 1 or args.reports < 1:
        raise ValueError("--num-samples and --reports must be ≥ 1")
    degradation = degradation_from(args)
    base, label = config_from(args, degradation.task)
    space = resolve_space(args.space, base)
    definition = new_definition(
        degradation, args.images, base, label, space,
        num_samples=args.num_samples, scheduler=args.scheduler, search=args.search,
        reports=args.reports, seed=args.seed, max_pixels=args.max_pixels,
        experiment=args.experiment or f"knitwork-{args.task}",
    )  # fmt: skip
    options = SearchOptions(
        definition=definition, storage=args.storage, name=args.name, output=args.output,
        resume=args.resume, cluster=cluster_from(args), s3_endpoint_url=args.s3_endpoint_url,
        track=not args.no_tracking,
    )  # fmt: skip
    warning = s3_credentials_to_environment(args.s3_endpoint_url)  # before Ray starts
    if warning:
        print(warning, file=sys.stderr)
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
