"""``python -m pipeline.kubeflow compile [PATH]``: rewrite infra/kubeflow/knitwork_pipeline.yaml
(or PATH). ``python -m pipeline.kubeflow fetch URI PATH``: copy a file from storage (local or
s3://) to a local path; a RayJob's head fetches the run's preset file with it.
``python -m pipeline.kubeflow run --input URI --output URI ...``: the whole pipeline on this
machine with kfp.local (pipeline/kubeflow/local.py)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.kubeflow")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("compile", help="compile the pipeline to YAML")
    build.add_argument("path", nargs="?", help="[infra/kubeflow/knitwork_pipeline.yaml]")
    fetch = sub.add_parser("fetch", help="copy URI (local or s3://) to a local PATH")
    fetch.add_argument("uri")
    fetch.add_argument("path")
    from pipeline.kubeflow.local import add_run, run

    add_run(sub)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "compile":
        from pipeline.kubeflow.definition import COMPILED, compile_pipeline

        print(f"wrote {compile_pipeline(args.path or COMPILED)}")
        return 0
    from pathlib import Path

    from pipeline.kubeflow.steps import read_uri

    Path(args.path).write_bytes(read_uri(args.uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
