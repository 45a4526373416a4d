"""`knitwork compare`: the run comparison (thin: parse, call, print). Imports nothing heavy at
module level, so that ``knitwork --help`` stays fast."""

from __future__ import annotations

import argparse
import shutil
import sys

_HELP = """\
Compare MLflow runs side by side: print the params that differ (identical ones are counted and
hidden) and the metrics with the best value of each row marked *, and write a self-contained
HTML report (DIR/report.html: tables, metric-against-parameter plots, loss curves, the same
image across runs) that opens offline.

Each argument is an experiment name or a run id. A parent run (a `knitwork restore` batch, a
search) stands for itself and its child runs; a child run inherits its parent's params. With
no argument, every experiment of the tracking store is compared.

Best: highest for psnr/ssim-like metrics, lowest for loss/seconds-like ones, unmarked when the
name does not say; runs tagged with an image compete only with runs of the same image.
MLflow: MLFLOW_TRACKING_URI, default sqlite:///mlflow.db in the current folder.

examples:
  knitwork compare                                  # every experiment in ./mlflow.db
  knitwork compare knitwork-inpaint                 # all batches of one experiment
  knitwork compare 3f2a9c...e1 77b0d4...9a          # two batches (parent run ids) and their images
  knitwork compare knitwork-inpaint --output out/cmp && chromium out/cmp/report.html
"""


def add_compare(sub: argparse._SubParsersAction) -> None:
    """Register ``knitwork compare`` on the subcommand parser ``sub``."""
    p = sub.add_parser(
        "compare",
        help="compare MLflow experiments or runs; write an HTML report",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="EXPERIMENT|RUN_ID",
        help="experiment names or run ids (a parent run brings its children); none: all",
    )
    p.add_argument(
        "--output",
        default="compare-report",
        metavar="DIR",
        help="folder for report.html [compare-report]",
    )
    p.add_argument("--width", type=int, help="text table width [terminal width, at most 120]")
    p.add_argument("--no-report", action="store_true", help="print the tables only")
    p.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from knitwork_compare.compare import build_comparison, gather_runs, open_client, shown_uri
    from knitwork_compare.report import write_report
    from knitwork_compare.text import format_comparison
    from pipeline.tracking import tracking_uri

    client = open_client(tracking_uri())
    runs = gather_runs(client, args.targets)
    comparison = build_comparison(runs, shown_uri(client.tracking_uri))
    width = args.width or min(120, shutil.get_terminal_size((110, 24)).columns)
    print(format_comparison(comparison, width=max(60, width)))
    if args.no_report:
        return 0
    command = " ".join(["knitwork compare", *args.targets])
    path, notes = write_report(client, comparison, args.output, command)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {path}")
    return 0
