"""`knitwork restore`: argument parsing for the batch pipeline (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import sys

_HELP = """\
Restore every image under INPUT into OUTPUT, one Neural Knitwork per image, as Ray tasks, and
record the batch in MLflow. INPUT and OUTPUT are local folders or s3://bucket/prefix URIs;
relative names are kept. OUTPUT/_manifest.jsonl lists every image's status, metrics and MLflow
run; a rerun skips the images it shows finished with the same settings (--overwrite redoes
them). The exit code is 1 when any image failed.

Inpainting masks come from --masks (a tree with the same relative names; white = hole) or from
each image's alpha channel. With --synthetic, INPUT holds clean images that are degraded with
the seeded degradation of `knitwork fit --synthetic` and scored; --ground-truth URI scores real
inputs against clean images of the same names.

Ray: a local cluster sized to this machine unless --address or RAY_ADDRESS names one.
MLflow: MLFLOW_TRACKING_URI, default sqlite:///mlflow.db in the current folder; open the UI
with `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
S3: endpoint from --s3-endpoint-url or AWS_ENDPOINT_URL (MinIO, Ceph), credentials from the
usual AWS chain.

examples:
  knitwork restore examples out/restored --task inpaint --synthetic --fill-ratio 0.04
  knitwork restore s3://photos/scratched s3://photos/fixed --task inpaint --masks s3://photos/masks
  knitwork restore noisy/ clean/ --task denoise --address ray://head:10001 --gpus-per-task 0.25
"""


def add_restore(sub: argparse._SubParsersAction) -> None:
    from knitwork.cli import add_fit_options

    p = sub.add_parser(
        "restore",
        help="restore a folder or s3:// prefix on Ray",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="folder or s3://bucket/prefix of images")
    p.add_argument("output", help="folder or s3://bucket/prefix for the restored images")
    add_fit_options(p, clean="INPUT")
    p.add_argument("--masks", help="inpainting masks: folder or s3:// URI, same relative names")
    p.add_argument("--ground-truth", help="clean images with the same names, for scoring")
    p.add_argument("--overwrite", action="store_true", help="redo images already finished")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS or local)")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per image [1]")
    p.add_argument(
        "--gpus-per-task",
        type=float,
        default=0.0,
        help="GPUs per image, fractional allowed (0.25); used only if present [0]",
    )
    p.add_argument("--max-in-flight", type=int, help="tasks submitted at once [2 × CPUs]")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a lost task [2]")
    p.add_argument("--experiment", help="MLflow experiment [knitwork-TASK]")
    p.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (MinIO, Ceph); else AWS_ENDPOINT_URL")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_restore)


def run_restore(args: argparse.Namespace) -> int:
    from knitwork.cli import resolve_config
    from pipeline.driver import RestoreOptions, restore, summary_table

    config, label = resolve_config(args)
    options = RestoreOptions(
        input=args.input,
        output=args.output,
        task=args.task,
        config=config,
        preset=label,
        seed=args.seed,
        masks=args.masks,
        ground_truth=args.ground_truth,
        synthetic=args.synthetic,
        fill_ratio=args.fill_ratio,
        sigma=args.sigma,
        scale=args.scale,
        kernel=args.kernel,
        degrade_kernel=args.degrade_kernel,
        overwrite=args.overwrite,
        address=args.address,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        max_in_flight=args.max_in_flight,
        max_retries=args.max_retries,
        experiment=args.experiment,
        s3_endpoint_url=args.s3_endpoint_url,
        max_pixels=args.max_pixels,
        progress=not args.quiet,
        track=not args.no_tracking,
    )
    summary = restore(options)
    print(summary_table(summary))
    if summary.parent_run_id:
        print(
            f"MLflow: batch run {summary.parent_run_id}"
            + ("" if summary.tracked else " (incomplete: tracking failed)")
        )
    elif options.track:
        print("MLflow: not recorded (tracking failed; see the warning above)", file=sys.stderr)
    return summary.exit_code
