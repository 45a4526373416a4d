"""Tune's state on S3 through an endpoint URL that carries credentials: pyarrow is given the
host alone as its endpoint and the credentials as keys, a real search runs against moto's
server on 127.0.0.1, and the secret shows in no message, MLflow record, Ray log or file that
we write. Ray Tune itself pickles its storage filesystem, keys included, into its own state
(tuner.pkl, experiment_state-*.json): the search warns of that, naming no secret."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from knitwork_cli.main import main
from pipeline.storage import open_storage, s3_client
from tests.services import write_images
from tune.s3 import ray_storage

SECRET = "hunter2/Sesame-7"  # URL-encoded in the endpoint: '/' is %2F


def with_credentials(endpoint: str, user: str = "ann", secret: str = SECRET) -> str:
    scheme, rest = endpoint.split("://", 1)
    return f"{scheme}://{user}:{secret.replace('/', '%2F')}@{rest}"


def filesystem_options(filesystem) -> dict:
    """The arguments pyarrow built the filesystem with (``S3FileSystem`` pickles to them)."""
    return filesystem.__reduce__()[1][0]


def test_the_filesystem_gets_the_host_as_endpoint_and_the_credentials_as_keys(
    s3_endpoint, bucket, monkeypatch
):
    host = s3_endpoint.split("://", 1)[1]
    for given, environment in ((with_credentials(s3_endpoint), None), (None, "creds")):
        if environment:  # the same endpoint from AWS_ENDPOINT_URL
            monkeypatch.setenv("AWS_ENDPOINT_URL", with_credentials(s3_endpoint))
        path, filesystem = ray_storage(f"s3://{bucket}/tune/state", given)
        options = filesystem_options(filesystem)
        assert options["endpoint_override"] == host and options["scheme"] == "http"
        assert (options["access_key"], options["secret_key"]) == ("ann", SECRET)
        with filesystem.open_output_stream(f"{path}/probe.txt") as handle:
            handle.write(b"written through pyarrow")
        stored = open_storage(f"s3://{bucket}/tune/state", s3_endpoint).read("probe.txt")
        assert stored == b"written through pyarrow"

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _, filesystem = ray_storage(f"s3://{bucket}/tune/state", None)
    options = filesystem_options(filesystem)
    assert options["endpoint_override"] == host and not options["access_key"]  # AWS's chain
    assert ray_storage("/some/folder", s3_endpoint) == ("/some/folder", None)


OURS = ("trials.csv", "best-inpaint.yaml", "objective.png", "knitwork-search.json")


def _keys(bucket: str, endpoint: str) -> list[str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix="tune/")
    return [o["Key"] for o in listing["Contents"]]


def _object(bucket: str, endpoint: str, key: str) -> bytes:
    return s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


def _files_holding(folder: Path, text: str) -> list[str]:
    needle = text.encode()
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_search_on_s3_through_an_endpoint_with_credentials_never_shows_the_secret(
    ray_cluster, tracking, bucket, s3_endpoint, tmp_path, capfd
):
    names = write_images(tmp_path / "in", names=("p.png", "q.png"))
    images = open_storage(f"s3://{bucket}/clean", s3_endpoint)
    for name in names:
        images.write(name, (tmp_path / "in" / name).read_bytes())
    endpoint = with_credentials(s3_endpoint)
    args = ["tune", "--task", "inpaint", "--images", f"s3://{bucket}/clean", "--storage",
            f"s3://{bucket}/tune", "--num-samples", "2", "--scheduler", "none", "--steps", "4",
            "--reports", "2", "--experiment", "tests", "--fill-ratio", "0.05",
            "--s3-endpoint-url", endpoint]  # fmt: skip
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "tune-inpaint" in out + err
    assert SECRET not in out + err and "Sesame" not in out + err
    assert "carries credentials; Ray Tune keeps them in its state files" in err
    assert err.count("warning: the S3 endpoint http://ann:***@127.0.0.1") == 1

    folder = open_storage(f"s3://{bucket}/tune/tune-inpaint", s3_endpoint)
    rows = list(csv.DictReader(folder.read("trials.csv").decode().splitlines()))
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    ours = [k for k in _keys(bucket, s3_endpoint) if k.rsplit("/", 1)[-1] in OURS]
    assert len(ours) == len(OURS)
    assert [k for k in ours if b"Sesame" in _object(bucket, s3_endpoint, k)] == []

    tracker = MlflowClient(tracking_uri=tracking)
    runs = tracker.search_runs([tracker.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 3  # the search and its two trials
    for run in runs:
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert "Sesame" not in recorded and "hunter2" not in recorded

    session = Path(ray_cluster._private.worker._global_node.get_session_dir_path())
    assert _files_holding(session / "logs", "Sesame") == []  # no Ray log shows it
    assert os.environ["AWS_ENDPOINT_URL"] == s3_endpoint  # the session's own endpoint kept
