"""`knitwork stack up | down | status`: a local S3 endpoint, MLflow server and Ray head on
127.0.0.1 (thin: parse, call, print; the logic is pipeline.stack)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HELP = """\
Run the services a batch needs on this machine, on 127.0.0.1 only, in the background:

  s3      an S3 endpoint: MinIO when a `minio` binary is on PATH (objects kept on disk in
          STATE/minio; credentials from MINIO_ROOT_USER/MINIO_ROOT_PASSWORD, else MinIO's
          defaults), else moto's server, which keeps objects IN MEMORY ONLY: they are gone
          when the stack stops. The bucket (--bucket, default knitwork) is created.
  mlflow  an MLflow tracking server (1 worker, runs in STATE/mlflow.db) that stores artifacts
          in s3://BUCKET/mlflow and proxies them: its clients need no S3 credentials.
  ray     a Ray head (no dashboard; every port on 127.0.0.1; its own ports and temp dir, so
          other Ray clusters of this machine are left alone).

`up` starts them, waits until each answers (--timeout), and prints the settings to export
(AWS_ENDPOINT_URL and credentials, MLFLOW_TRACKING_URI, RAY_ADDRESS), also written to
STATE/env.sh. Progress and notes go to stderr, so `eval "$(knitwork stack up)"` works. A second
`up` while the stack runs starts nothing and exits 1. `down` stops exactly the processes `up`
started (found by pid files and by a mark in their environment, never by name) and waits until
they are gone. `status` lists each service, its pid and address, and whether it runs: exit 0
when all run, 1 otherwise. STATE (--state) holds pid files, logs (NAME.log) and stack.json.
No secret is printed: with moto, dummy credentials (said to be dummies); with MinIO, a password
from MINIO_ROOT_PASSWORD appears only as "$MINIO_ROOT_PASSWORD".

examples:
  eval "$(knitwork stack up)"                     # or: knitwork stack up; source out/stack/env.sh
  knitwork restore s3://knitwork/in s3://knitwork/out --task denoise --synthetic
  knitwork stack status
  knitwork stack down
  knitwork stack up --state /tmp/stack --s3 moto --ray-port 6380 --num-cpus 2
"""


_PORTS = {
    "s3": "the S3 endpoint's port (AWS_ENDPOINT_URL)",
    "mlflow": "the MLflow server's port (MLFLOW_TRACKING_URI)",
    "ray": "the Ray head's GCS port (RAY_ADDRESS)",
}


def add_stack(sub: argparse._SubParsersAction) -> None:
    """Register ``knitwork stack up|down|status`` on the subcommand parser ``sub``."""
    from pipeline.stack import DEFAULT_BUCKET, DEFAULT_STATE, READY_SECONDS

    p = sub.add_parser(
        "stack",
        help="start, stop or check a local S3 + MLflow + Ray stack on 127.0.0.1",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="up|down|status")
    more = "(`knitwork stack --help` says more)"
    up = actions.add_parser(
        "up",
        help="start the stack; print the settings to export",
        description=f"Start S3, MLflow and a Ray head on 127.0.0.1; print the settings {more}.",
    )
    down = actions.add_parser(
        "down",
        help="stop what `up` started",
        description=f"Stop exactly what `knitwork stack up` started; wait until it is gone {more}.",
    )
    status = actions.add_parser(
        "status",
        help="what runs; exit 0 when all of it",
        description=f"Each service, its pid and address, and whether it runs {more}.",
    )
    for parser in (up, down, status):
        parser.add_argument(
            "--state",
            type=Path,
            default=Path(DEFAULT_STATE),
            metavar="DIR",
            help=f"folder of the stack's pid files, logs and settings [{DEFAULT_STATE}]",
        )
    up.add_argument(
        "--s3",
        choices=("auto", "minio", "moto"),
        default="auto",
        help="S3 server: auto = minio when on PATH, else moto (objects in memory only) [auto]",
    )
    for name, what in _PORTS.items():
        up.add_argument(f"--{name}-port", type=int, metavar="PORT", help=f"{what} [a free one]")
    up.add_argument(
        "--bucket",
        default=DEFAULT_BUCKET,
        help=f"bucket to create; MLflow's artifacts go to s3://BUCKET/mlflow [{DEFAULT_BUCKET}]",
    )
    up.add_argument("--num-cpus", type=int, metavar="N", help="CPUs the Ray head offers [all]")
    up.add_argument(
        "--timeout",
        type=float,
        default=READY_SECONDS,
        metavar="SECONDS",
        help=f"how long the services may take to answer [{READY_SECONDS:g}]",
    )
    up.set_defaults(run=run_up)
    down.set_defaults(run=run_down)
    status.set_defaults(run=run_status)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_up(args: argparse.Namespace) -> int:
    from pipeline.stack import ENV_FILE, StackError, StackOptions, start_stack

    options = StackOptions(
        state=args.state,
        s3=args.s3,
        s3_port=args.s3_port,
        mlflow_port=args.mlflow_port,
        ray_port=args.ray_port,
        bucket=args.bucket,
        num_cpus=args.num_cpus,
        timeout=args.timeout,
    )
    try:
        stack = start_stack(options, _say)
    except StackError as err:
        _say(f"error: {err}")
        return 1
    kind = stack.services[0].kind
    if kind == "moto":
        _say(
            "note: S3 is moto's server, which keeps objects in memory only: everything in "
            f"s3://{stack.bucket} (MLflow's artifacts included) is lost at `knitwork stack down` "
            "or if it stops. Put a `minio` binary on PATH for objects kept on disk."
        )
    else:
        _say(f"note: S3 is MinIO; its objects are kept in {stack.state}/minio")
    _say(f"stack up; its settings are also in {stack.state}/{ENV_FILE}. Export them:")
    print("\n".join(stack.exports), flush=True)
    return 0


def run_down(args: argparse.Namespace) -> int:
    from pipeline.stack import StackError, stop_stack

    try:
        stack = stop_stack(args.state, _say)
    except StackError as err:
        _say(f"error: {err}")
        return 1
    if stack is None:
        _say(f"no stack recorded in {args.state}: nothing to stop")
        return 0
    if stack.services and stack.services[0].kind == "moto":
        _say(f"moto's S3 objects (s3://{stack.bucket}, MLflow's artifacts included) are gone:")
        _say(f"they lived in memory only. MLflow's run records remain in {stack.state}/mlflow.db")
    _say("stack down")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from pipeline.stack import StackError, stack_status

    try:
        found = stack_status(args.state)
    except StackError as err:
        _say(f"error: {err}")
        return 1
    if found is None:
        print(f"no stack recorded in {args.state}: `knitwork stack up` starts one")
        return 1
    stack, services = found
    print(f"{'SERVICE':<8} {'KIND':<7} {'PID':>8}  {'ADDRESS':<24} STATE")
    for service, alive, answering in services:
        state = "up" if alive and answering else "not answering" if alive else "not running"
        row = f"{service.name:<8} {service.kind:<7} {service.pid:>8}  {service.address:<24}"
        print(f"{row} {state}")
    print(f"state: {stack.state}")
    return 0 if all(alive and answering for _, alive, answering in services) else 1
