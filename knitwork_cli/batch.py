"""`knitwork restore` and `knitwork bench quality`: batches on Ray, recorded in MLflow."""

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
    names,
)

_HELP = """\
Restore every image under INPUT into OUTPUT, one Neural Knitwork per image, as Ray tasks, and
record the batch in MLflow. INPUT and OUTPUT are local folders or s3://bucket/prefix URIs;
relative names are kept. OUTPUT/_manifest.jsonl lists every image's status, metrics and MLflow
run; a rerun skips the images it shows finished with the same settings (--overwrite redoes
them). The exit code is 1 when any image failed.

Inpainting masks come from --masks (a tree with the same relative names; white = hole) or from
each image's alpha channel. With --synthetic, INPUT holds clean images that are degraded with
the seeded degradation of `knitwork fit --synthetic` and scored (blind super-resolution: its
learned kernel too, kernel_error and kernel_error_start); --ground-truth URI scores real
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
    p = sub.add_parser(
        "restore",
        help="restore a folder or s3:// prefix on Ray",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="folder or s3://bucket/prefix of images")
    p.add_argument("output", help="folder or s3://bucket/prefix for the restored images")
    add_degradation_options(p, clean="INPUT")
    add_config_options(p)
    p.add_argument("--masks", help="inpainting masks: folder or s3:// URI, same relative names")
    p.add_argument("--ground-truth", help="clean images with the same names, for scoring")
    p.add_argument("--overwrite", action="store_true", help="redo images already finished")
    add_cluster_options(p)
    add_tracking_options(p, experiment="knitwork-TASK")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_restore)


def run_restore(args: argparse.Namespace) -> int:
    from pipeline.driver import RestoreOptions, restore
    from pipeline.summary import summary_table

    degradation = degradation_from(args)
    config, label = config_from(args, degradation.task)
    options = RestoreOptions(
        input=args.input,
        output=args.output,
        config=config,
        degradation=degradation,
        preset=label,
        seed=args.seed,
        synthetic=args.synthetic,
        masks=args.masks,
        ground_truth=args.ground_truth,
        overwrite=args.overwrite,
        cluster=cluster_from(args),
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


_BENCH_HELP = """\
Measure restoration quality under a fixed, seeded protocol: every clean image under --images is
degraded, restored by the Knitwork (--preset, default fast-TASK for the suite's task), the
conventional MLP baseline on the same budget, and the classical tools a user might pick
instead, and scored (RGB PSNR/SSIM, whole image and hole). One Ray task per image, setting,
repeat and network (the classical tools share one); every row is an MLflow child run of one
bench run.

suites and settings:
  inpaint  one square hole of 1, 2, 4, 8, 16 % of the pixels at a seeded position inside the
           image (fill=F), and free-form holes of 3 %: thin scratches (scratch=0.03) and a text
           overlay (text=0.03); methods knitwork, dip (Deep Image Prior, on request), mlp,
           biharmonic (scikit-image), telea, navier-stokes (OpenCV)
  denoise  white Gaussian noise σ 10, 20, 40 (0-255 scale; --sigmas sets others); methods
           knitwork, dip (on request), mlp, nlm (non-local means), bm3d — these estimate σ,
           as the networks do not know it — and bm3d-sigma, BM3D told the true σ (as
           published CBM3D numbers are)
  sr       blind ×2 and ×4 from delta, round and diagonal Gaussian kernels and random (one
           seeded random anisotropic Gaussian per image, DIV2KRK's generator: x2/random,
           x4/random); knitwork (learned kernel), mlp, bicubic. The networks' rows also score
           the learned kernel against the true one: kernel_error, and kernel_error_start (the
           delta start's; 0 = the truth up to a whole-pixel shift)
  ablation-inpaint, ablation-denoise
           the paper's ablation (its Fig. 3) on the settings of inpaint / denoise: five networks,
           each the previous one plus one component of the preset (knitwork/ablation.py):
           mlp (the conventional coordinate MLP), patches (multi-scale patch output, no
           reconstructor: the centre pixel, patch loss only), consistency (+ α), reconstructor
           (+ the reconstructor and β), knitwork (+ the discriminator γ: the preset itself);
           no classical tools

Reduced protocols: --max-side downscales each clean image, then --centre-crop N keeps its
central N×N (a side shorter than N is kept whole), before it is degraded; --every K takes
only every K-th image of the sorted list (K=4 on CBSD68's 68: 17 images). The crop is part
of each row's hash and recorded in the row; --max-side, --centre-crop and --every are
recorded in the bench's MLflow run.

Error bars: --seeds N runs each (image, setting) N times; repeat r = 0 … N-1 seeds the
degradation (hole position, noise, random kernel) and every fit with the image's seed + r, so
all methods of a repeat see the same degraded image. Each row records its repeat.

OUTPUT/rows.jsonl keeps every row; a rerun skips rows already done with the same settings
(rows from before --seeds count as repeat 0; raising --seeds computes only the new repeats).
Restored images: OUTPUT/SETTING/METHOD/IMAGE.png (and .../input/, .../truth/; SR's true kernels
as .../truth/IMAGE.npy); repeats r > 0 under OUTPUT/SETTING/repeatR/. --json FILE writes
{"rows": [...]} with method, setting, image, repeat, psnr, ssim, psnr_hole, ssim_hole (ours:
the known pixels kept), psnr_raw, ssim_raw (the paper's protocol: the whole raw network output,
no known pixel pasted back; a classical tool's output as it is), seconds (SR: kernel_error,
kernel_error_start), config_hash. The table printed at the end shows mean scores over images
and repeats (SR: and mean kernel errors), then per setting the Knitwork's score minus each other
method's (ablation: each stage's minus the previous stage's), on hole PSNR and PSNR for
inpainting, PSNR otherwise: the mean difference, its paired standard error (std of the
per-image differences / √n, an image's value its mean over repeats), the images it wins (k/n)
and a verdict: ahead or behind only when the mean lies outside ± SE, else within SE.
docs/benchmarks/quality.md explains the protocol and shows the results beside the paper's.

examples:
  knitwork bench quality --suite inpaint --images ../shared/datasets/Set5 --max-side 64 \\
      --json set5-inpaint.json
  knitwork bench quality --suite sr --images s3://data/Set14 --preset paper-sr \\
      --address ray://head:10001 --gpus-per-task 0.5
  knitwork bench quality --suite denoise --images ../shared/datasets/CBSD68 \\
      --sigmas 15,25,50 --centre-crop 128 --every 4 --json cbsd68-denoise.json
  knitwork bench quality --suite ablation-inpaint --images ../shared/datasets/Set5 \\
      --max-side 64 --seeds 3 --methods mlp,patches,knitwork
"""


# pipeline.bench_suites.SUITES, spelled out so that `knitwork --help` imports nothing heavy
_SUITES = ["inpaint", "denoise", "sr", "ablation-inpaint", "ablation-denoise"]


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: `knitwork bench quality --help`")
    kinds = p.add_subparsers(dest="bench", required=True)
    q = kinds.add_parser(
        "quality",
        help="restoration quality beside the MLP baseline and classical tools",
        description=_BENCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--suite", required=True, choices=_SUITES, help="see above")
    q.add_argument("--images", required=True, help="clean images: folder or s3:// URI")
    q.add_argument("--output", help="rows.jsonl and restored images [out/bench/SUITE]")
    q.add_argument("--max-side", type=int, help="downscale images to this longest side first")
    q.add_argument(
        "--centre-crop",
        type=int,
        metavar="N",
        help="then keep each image's central N×N (a shorter side whole) [whole image]",
    )
    q.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="K",
        help="only every K-th image of the sorted list, from the first [1: all]",
    )
    add_config_options(q, seed_help="base seed of the degradations and fits [0]", baseline=False)
    q.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="repeats per image and setting, repeat r seeded with the image's seed + r [1]",
    )
    q.add_argument(
        "--methods",
        help="comma-separated subset of the suite's methods or stages; dip (Deep Image Prior: "
        "inpaint, denoise) runs only when named here [all but dip]",
    )
    q.add_argument(
        "--dip-steps",
        type=int,
        metavar="N",
        help="DIP's steps [its published schedule's: 5000 inpainting, 3000 denoising; at 64 px "
        "denoising peaks near 500 and then fits the noise]",
    )
    q.add_argument("--settings", help="comma-separated subset of its settings, e.g. x2/delta [all]")
    q.add_argument(
        "--sigmas",
        help="denoise, ablation-denoise: comma-separated noise levels (0-255), settings "
        "sigma=N [10,20,40]",
    )
    q.add_argument("--json", help='write {"rows": [...]} to this file')
    add_cluster_options(q)
    add_tracking_options(q, experiment="knitwork-bench")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(run=run_bench_quality)


def _sigmas(text: str | None) -> tuple[float, ...] | None:
    """--sigmas as numbers (their range is checked by the bench)."""
    if text is None:
        return None
    try:
        return tuple(float(s) for s in names(text) or ())
    except ValueError:
        raise ValueError(
            f"--sigmas must be comma-separated numbers, e.g. 15,25,50; got {text!r}"
        ) from None


def run_bench_quality(args: argparse.Namespace) -> int:
    from knitwork.io import DEFAULT_MAX_PIXELS
    from pipeline.bench_driver import BenchOptions, run_bench
    from pipeline.bench_suites import suite_task
    from pipeline.bench_tables import table
    from pipeline.storage import redact

    config, label = config_from(args, suite_task(args.suite))
    options = BenchOptions(
        suite=args.suite,
        images=args.images,
        output=args.output or f"out/bench/{args.suite}",
        config=config,
        preset=label,
        max_side=args.max_side,
        seed=args.seed,
        seeds=args.seeds,
        methods=names(args.methods),
        dip_steps=args.dip_steps,
        settings=names(args.settings),
        sigmas=_sigmas(args.sigmas),
        centre_crop=args.centre_crop,
        every=args.every,
        json_path=args.json,
        cluster=cluster_from(args),
        experiment=args.experiment,
        s3_endpoint_url=args.s3_endpoint_url,
        max_pixels=DEFAULT_MAX_PIXELS,
        progress=not args.quiet,
        track=not args.no_tracking,
    )
    summary = run_bench(options)
    print(table(summary.rows, args.suite))
    print(
        f"{len(summary.rows)} rows ({summary.ran} computed now, {summary.failed} failed) in "
        f"{summary.seconds:.0f} s; rows in {options.output}/rows.jsonl"
        + (f"; MLflow run {summary.parent_run_id}" if summary.parent_run_id else "")
    )
    for row in summary.rows:
        if row["status"] != "ok":
            print(f"failed: {row['method']} {row['setting']} {row['image']}: "
                  f"{redact(str(row['error']))}",
                  file=sys.stderr)  # fmt: skip
    return summary.exit_code
