"""Tune's state on S3 through an endpoint URL that carries credentials: pyarrow is given the
host alone as its endpoint and no keys (the command moves the URL's credentials into
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), a real search runs against moto's server on
127.0.0.1, and the secret is in no message, MLflow record, Ray log or file: neither those we
write nor Ray Tune's own state (tuner.pkl, experiment_state-*.json, which pickle its storage
filesystem), on S3 or on the local disk."""

from __future__ import annotations

import base64
import csv
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient

from pipeline.storage import StorageError, open_storage, s3_client
from tests.services import write_images
from tune.s3 import ray_storage

SECRET = "hunter2/Sesame-7"  # URL-encoded in the endpoint: '/' is %2F


def with_credentials(endpoint: str, user: str = "ann", secret: str = SECRET) -> str:
    scheme, rest = endpoint.split("://", 1)
    return f"{scheme}://{user}:{secret.replace('/', '%2F')}@{rest}"


def filesystem_options(filesystem) -> dict:
    """The arguments pyarrow built the filesystem with (``S3FileSystem`` pickles to them)."""
    return filesystem.__reduce__()[1][0]


def test_the_filesystem_gets_the_host_as_endpoint_and_no_keys(s3_endpoint, bucket, monkeypatch):
    host = s3_endpoint.split("://", 1)[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ann")  # as the knitwork command moves them
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for given, environment in ((with_credentials(s3_endpoint), None), (None, "creds")):
        if environment:  # the same endpoint from AWS_ENDPOINT_URL
            monkeypatch.setenv("AWS_ENDPOINT_URL", with_credentials(s3_endpoint))
        path, filesystem = ray_storage(f"s3://{bucket}/tune/state", given)
        options = filesystem_options(filesystem)
        assert options["endpoint_override"] == host and options["scheme"] == "http"
        assert options["access_key"] is None and options["secret_key"] is None  # AWS's chain
        assert b"Sesame" not in pickle.dumps(filesystem)  # what Tune stores of it
        with filesystem.open_output_stream(f"{path}/probe.txt") as handle:
            handle.write(b"written through pyarrow")
        stored = open_storage(f"s3://{bucket}/tune/state", s3_endpoint).read("probe.txt")
        assert stored == b"written through pyarrow"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another")  # a caller that did not move them
    with pytest.raises(StorageError, match="Ray Tune would store them") as refused:
        ray_storage(f"s3://{bucket}/tune/state", with_credentials(s3_endpoint))
    assert "Sesame" not in str(refused.value) and "http://ann:***@127.0.0.1" in str(refused.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _, filesystem = ray_storage(f"s3://{bucket}/tune/state", None)
    assert filesystem_options(filesystem)["endpoint_override"] == host
    assert ray_storage("/some/folder", s3_endpoint) == ("/some/folder", None)


def test_the_command_moves_the_urls_credentials_into_the_environment(monkeypatch):
    """`knitwork tune` puts the URL's key and secret where AWS's default chain finds them: the
    URL, which names them for this endpoint, wins over a different pair there (with a warning
    naming neither), and a session token of that other pair is dropped."""
    from knitwork_cli.environment import s3_credentials_to_environment as move

    endpoint = with_credentials("http://127.0.0.1:9000")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert move("http://127.0.0.1:9000") is None and "AWS_ACCESS_KEY_ID" not in os.environ
    assert move(endpoint) is None  # nothing there before: no warning
    assert (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) == ("ann", SECRET)
    assert move(endpoint) is None  # the same pair again
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "other")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-of-the-other-pair")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # read when no option is given
    warning = move(None)
    assert "differ from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in warning
    assert "ann" not in warning and "Sesame" not in warning
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET and "AWS_SESSION_TOKEN" not in os.environ


OURS = ("trials.csv", "best-inpaint.yaml", "objective.png", "knitwork-search.json")
TUNE_STATE = ("tuner.pkl", "experiment_state-", "basic-variant-state-")


def _objects(bucket: str, endpoint: str) -> dict[str, bytes]:
    """Every object of the bucket, downloaded."""
    client = s3_client(endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _forms(text: str) -> list[bytes]:
    """``text`` as a file could hold it: raw, URL-encoded, hex (Tune's JSON state holds
    pickles as hex) and base64 (the characters that do not depend on the alignment)."""
    raw = text.encode()
    forms = [raw, quote(text, safe="").encode(), raw.hex().encode(), raw.hex().upper().encode()]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        forms.append(encoded[(4 * pad + 2) // 3 + 1 : -3])  # drop the characters pad touches
    return forms


def _holding(files: dict[str, bytes], text: str) -> list[str]:
    return [name for name, data in files.items() if any(f in data for f in _forms(text))]


def _raw(files: dict[str, bytes], text: str) -> list[str]:
    return [name for name, data in files.items() if text.encode() in data]


def _local_files(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in f.rglob("*") if p.is_file()}


def test_a_search_on_s3_through_an_endpoint_with_credentials_stores_the_secret_nowhere(
    tracking, bucket, s3_endpoint, tmp_path
):
    """`knitwork tune` as a user runs it, its own local Ray cluster in a temp dir of its own;
    the environment holds another (dummy) key pair, which the URL's replaces."""
    names = write_images(tmp_path / "in", names=("p.png", "q.png"))
    images = open_storage(f"s3://{bucket}/clean", s3_endpoint)
    for name in names:
        images.write(name, (tmp_path / "in" / name).read_bytes())
    ray_temp = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))  # short: socket paths
    command = [sys.executable, "-m", "knitwork_cli", "tune", "--task", "inpaint", "--images",
               f"s3://{bucket}/clean", "--storage", f"s3://{bucket}/tune", "--num-samples", "2",
               "--scheduler", "none", "--steps", "4", "--reports", "2", "--experiment", "tests",
               "--fill-ratio", "0.05", "--s3-endpoint-url"]  # fmt: skip
    command.append(with_credentials(s3_endpoint))
    try:
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env=os.environ | {"RAY_TMPDIR": str(ray_temp)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        local = _local_files(ray_temp, tmp_path)  # Ray's session: logs, Tune's staged state
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    out, err = result.stdout, result.stderr
    assert "tune-inpaint" in out + err
    assert _holding({"stdout": out.encode(), "stderr": err.encode()}, SECRET) == []
    assert "Sesame" not in out + err and "hunter2" not in out + err
    assert err.count("the S3 endpoint URL carries credentials that differ from") == 1

    folder = open_storage(f"s3://{bucket}/tune/tune-inpaint", s3_endpoint)
    rows = list(csv.DictReader(folder.read("trials.csv").decode().splitlines()))
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    stored = _objects(bucket, s3_endpoint)
    ours = [k for k in stored if k.rsplit("/", 1)[-1] in OURS]
    assert len(ours) == len(OURS)
    state = [k for k in stored if k.rsplit("/", 1)[-1].startswith(TUNE_STATE)]
    assert len(state) >= 3, sorted(stored)  # Tune's pickled state is among what was searched
    assert _holding(stored, SECRET) == [] and _raw(stored, "Sesame") == []

    assert any("/experiment_state-" in name for name in local), "no local state of Tune's"
    assert any(name.endswith("runtime_env_agent.log") for name in local), sorted(local)
    assert _holding(local, SECRET) == [] and _raw(local, "Sesame") == []  # mlflow.db included

    tracker = MlflowClient(tracking_uri=tracking)
    runs = tracker.search_runs([tracker.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 3  # the search and its two trials
    for run in runs:
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert "Sesame" not in recorded and "hunter2" not in recorded
