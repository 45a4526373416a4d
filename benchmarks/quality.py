"""The quality benchmark beside the paper's tables: run it, then write docs/benchmarks/quality.md.

    python benchmarks/quality.py run [--sets Set5 Set14] [--suites inpaint denoise sr]
                                     [--max-side 64] [--preset-prefix fast]
    python benchmarks/quality.py report

`run` calls `knitwork bench quality` once per (set, suite), on a local Ray cluster, with MLflow
in out/bench/mlflow.db, rows in docs/benchmarks/quality/SET-SUITE.json and restored images in
out/bench/SET-SUITE/ (a rerun resumes). `report` reads those JSON files and writes the tables
(ours beside the paper's Table 1–3) and one picture per task.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "benchmarks" / "quality"
OUT = ROOT / "out" / "bench"
DATASETS = ROOT.parent / "shared" / "datasets"


def command(dataset: str, suite: str, max_side: int, preset: str) -> list[str]:
    return [
        "knitwork", "bench", "quality", "--suite", suite,
        "--images", f"../shared/datasets/{dataset}", "--max-side", str(max_side),
        "--preset", f"{preset}-{suite}", "--experiment", f"quality-{dataset}",
        "--output", f"out/bench/{dataset}-{suite}",
        "--json", f"docs/benchmarks/quality/{dataset.lower()}-{suite}.json", "--quiet",
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{OUT / 'mlflow.db'}"}
    bin_dir = Path(sys.executable).parent
    worst = 0
    for dataset in args.sets:
        for suite in args.suites:
            cmd = command(dataset, suite, args.max_side, args.preset_prefix)
            print("$", shlex.join(cmd), flush=True)
            done = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=ROOT, env=env)
            worst = max(worst, done.returncode)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run the bench for each set and suite")
    r.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    r.add_argument("--suites", nargs="+", default=["inpaint", "denoise", "sr"])
    r.add_argument("--max-side", type=int, default=64)
    r.add_argument("--preset-prefix", default="fast", choices=["fast", "paper"])
    r.set_defaults(go=run)
    w = sub.add_parser("report", help="write docs/benchmarks/quality.md from the JSON rows")
    w.set_defaults(go=report)
    args = parser.parse_args()
    return args.go(args)


def report(args: argparse.Namespace) -> int:
    from quality_report import write_report

    write_report(DATA, OUT, ROOT / "docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
