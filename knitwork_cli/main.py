"""The ``knitwork`` command: every subcommand assembled here, the environment's defaults set
(``knitwork_cli.environment``), errors turned into messages and exit codes.

knitwork fit IMAGE --task inpaint|denoise|sr -o OUT.png   restore one image
knitwork restore INPUT OUTPUT --task inpaint|denoise|sr    a folder or s3:// prefix on Ray
knitwork bench quality --suite inpaint|denoise|sr         quality beside baselines (docs/benchmarks)
knitwork tune --task ... --images URI                      hyperparameter search on Ray Tune
knitwork compare [EXPERIMENT|RUN_ID ...]                   compare MLflow runs, HTML report
knitwork render MODEL.pt -o OUT.png --size WxH             redraw a saved model at any size
knitwork presets [show NAME]                               list presets or print one as YAML
knitwork stack up|down|status                              local S3 + MLflow + Ray on 127.0.0.1
"""

from __future__ import annotations

import argparse
import sys

# Only light modules here: the libraries below the entry layer (torch takes seconds) are
# imported inside main(), so that Ctrl-C while they load is an interruption, not a traceback.
from knitwork_cli import environment

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    from knitwork_cli.batch import add_bench, add_restore
    from knitwork_cli.compare import add_compare
    from knitwork_cli.search import add_tune
    from knitwork_cli.single import add_fit, add_presets, add_render
    from knitwork_cli.stack import add_stack

    parser = argparse.ArgumentParser(
        prog="knitwork",
        description="Neural Knitworks: restore images by fitting a patch-based coordinate MLP.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show MLflow's own INFO messages (default: progress bars, warnings, summaries)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_fit(sub)
    add_restore(sub)
    add_bench(sub)
    add_compare(sub)
    add_tune(sub)
    add_render(sub)
    add_presets(sub)
    add_stack(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except KeyboardInterrupt:  # Ctrl-C: in a command, or while the libraries load
        print("\ninterrupted" if _bar_left_open() else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _bar_left_open() -> bool:
    """Whether Ctrl-C came while a progress bar was being drawn, leaving its line unfinished
    (a bar that was closed has ended its line)."""
    tqdm = sys.modules.get("tqdm")
    return bool(tqdm is not None and getattr(tqdm.tqdm, "_instances", None))


def _run(argv: list[str] | None) -> int:
    from knitwork.trainer import NonFiniteLossError
    from pipeline.cluster import ClusterError
    from pipeline.storage import redact

    args = build_parser().parse_args(argv)
    try:
        environment.apply(args.command, getattr(args, "address", None), args.verbose)
        return args.run(args)
    except (NonFiniteLossError, ClusterError) as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, OSError) as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
