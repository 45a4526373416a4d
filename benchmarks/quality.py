"""The quality benchmark beside the paper's tables: run it, then write docs/benchmarks/quality.md.

    python benchmarks/quality.py run [--sets Set5 Set14] [--suites inpaint denoise sr]
                                     [--seeds 3] [--max-side 64] [--preset-prefix fast]
                                     [--methods dip] [--no-ablation] [--ablation-sets Set5]
    python benchmarks/quality.py report [--data DIR] [--out FILE] [--images-out DIR]

`run` calls `knitwork bench quality` once per (set, suite), on a local Ray cluster, with MLflow
in out/bench/mlflow.db, rows in docs/benchmarks/quality/SET-SUITE.json and restored images in
out/bench/SET-SUITE/ (a rerun resumes: only rows not yet done with the same settings are
computed, so raising --seeds adds the new repeats). The ablation suites (ablation-inpaint,
ablation-denoise: the paper's Fig. 3) run on the --ablation-sets among --sets. With --methods
(say `dip`) the task suites run only those methods and their rows are merged into the JSON by
method, setting, image and repeat; the ablation suites always run every stage. `report` reads
the JSON files and writes the tables (means ± SE, paired differences with wins, the paper's
published numbers apart) and one picture per task.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "benchmarks" / "quality"
DOC = ROOT / "docs" / "benchmarks" / "quality.md"
IMAGES = ROOT / "docs" / "images"
OUT = ROOT / "out" / "bench"
DATASETS = ROOT.parent / "shared" / "datasets"
ABLATION_SUITES = ("ablation-inpaint", "ablation-denoise")


def command(
    dataset: str,
    suite: str,
    max_side: int | None,
    preset: str,
    seeds: int = 3,
    methods: str | None = None,
) -> list[str]:
    """The exact `knitwork bench quality` line of one set and suite (``max_side`` None or 0:
    full size; ``methods``: a comma-separated subset, its rows written beside the output)."""
    task = suite.removeprefix("ablation-")
    json_path = (
        f"out/bench/{dataset}-{suite}/methods.json"
        if methods
        else f"docs/benchmarks/quality/{dataset.lower()}-{suite}.json"
    )
    return [
        "knitwork", "bench", "quality", "--suite", suite,
        "--images", f"../shared/datasets/{dataset}",
        *(["--max-side", str(max_side)] if max_side else []),
        "--preset", f"{preset}-{task}", "--seeds", str(seeds),
        *(["--methods", methods] if methods else []),
        "--experiment", f"quality-{dataset}", "--output", f"out/bench/{dataset}-{suite}",
        "--json", json_path, "--quiet",
    ]  # fmt: skip


def plan(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """(set, suite, methods) to run, in order: each set's task suites, then its ablation."""
    jobs = []
    for dataset in args.sets:
        jobs += [(dataset, suite, args.methods) for suite in args.suites]
        if args.ablation and dataset in args.ablation_sets:
            jobs += [(dataset, suite, None) for suite in ABLATION_SUITES]
    return jobs


def run(args: argparse.Namespace) -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{OUT / 'mlflow.db'}"}
    bin_dir = Path(sys.executable).parent
    worst = 0
    for dataset, suite, methods in plan(args):
        cmd = command(dataset, suite, args.max_side, args.preset_prefix, args.seeds, methods)
        partial = ROOT / cmd[cmd.index("--json") + 1] if methods else None
        if partial is not None:
            partial.unlink(missing_ok=True)  # never merge a previous run's subset
        print("$", shlex.join(cmd), flush=True)
        done = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=ROOT, env=env)
        worst = max(worst, done.returncode)
        if partial is not None and partial.is_file():
            target = DATA / f"{dataset.lower()}-{suite}.json"
            print(f"merged {merge_rows(partial, target, suite)} rows into {target}", flush=True)
    return worst


def merge_rows(partial: Path, target: Path, suite: str) -> int:
    """Put the rows of ``partial`` into ``target``'s JSON, replacing any with the same method,
    setting, image and repeat (0 where a row has none); the number merged."""
    from pipeline.bench_rows import row_key
    from pipeline.bench_suites import SUITES
    from pipeline.bench_tables import row_order

    new = json.loads(partial.read_text())["rows"]
    old = json.loads(target.read_text())["rows"] if target.is_file() else []
    rows = {row_key(r): r for r in old} | {row_key(r): r for r in new}
    known = [s.name for s in SUITES[suite]]
    settings = known + [
        s for s in dict.fromkeys(r["setting"] for r in rows.values()) if s not in known
    ]
    merged = sorted(rows.values(), key=row_order(suite, settings))
    target.write_text(json.dumps({"rows": merged}, indent=1, allow_nan=False), encoding="utf-8")
    return len(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run the bench for each set and suite (resumes)")
    r.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    r.add_argument("--suites", nargs="+", default=["inpaint", "denoise", "sr"])
    r.add_argument("--seeds", type=int, default=3, help="repeats per image and setting [3]")
    r.add_argument("--max-side", type=int, default=64, help="longest side in px; 0: full size [64]")
    r.add_argument("--preset-prefix", default="fast", choices=["fast", "paper"])
    r.add_argument(
        "--methods",
        help="comma-separated subset for the task suites, merged into the JSON; e.g. "
        "`--suites inpaint denoise --methods dip` [all]",
    )
    r.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run ablation-inpaint and ablation-denoise on --ablation-sets [on]",
    )
    r.add_argument("--ablation-sets", nargs="+", default=["Set5"], help="[Set5]")
    r.set_defaults(go=run)
    w = sub.add_parser("report", help="write docs/benchmarks/quality.md from the JSON rows")
    w.add_argument("--data", type=Path, default=DATA, help="the JSON rows [%(default)s]")
    w.add_argument(
        "--out",
        type=Path,
        default=DOC,
        help="the markdown written; its notes section is kept (from the default doc when "
        "it has none) [%(default)s]",
    )
    w.add_argument(
        "--images-out", type=Path, default=IMAGES, help="where pictures go [%(default)s]"
    )
    w.set_defaults(go=report)
    args = parser.parse_args()
    return args.go(args)


def report(args: argparse.Namespace) -> int:
    from quality_report import write_report

    write_report(args.data, OUT, args.out, args.images_out, command, notes_from=DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
