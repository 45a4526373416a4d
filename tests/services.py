"""Real services for the pipeline and tune tests, all on 127.0.0.1: moto's S3 server, a local
Ray cluster (2 CPUs, loopback only) and, where asked, a real `mlflow server`. The fixtures are
registered for every test folder by tests/conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import example_image

LOOPBACK_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1; its URL is AWS_ENDPOINT_URL for this whole session."""
    from moto.server import ThreadedMotoServer

    for key, value in LOOPBACK_ENV.items():
        os.environ[key] = value
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = url
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = url
    yield url
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint, tmp_path_factory):
    """A local Ray cluster of 2 CPUs whose every listener is on loopback. Started after the
    S3 settings so that its workers inherit them."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
    assert addresses == {"127.0.0.1"}, addresses
    yield ray
    ray.shutdown()


@pytest.fixture
def bucket(s3_endpoint) -> str:
    from pipeline.storage import s3_client

    name = f"test-{uuid.uuid4().hex[:10]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def write_images(folder: Path, names=("a.png", "sub/b.png", "c.png", "sub/deeper/d.png")):
    """Tiny clean images from examples/, under relative names (subfolders included)."""
    sources = ["bird", "head", "woman", "butterfly"]
    for name, source in zip(names, sources, strict=False):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (example_image(source, 24) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(path)
    return list(names)


def start_mlflow_server(folder: Path) -> tuple[str, subprocess.Popen]:
    """A real MLflow tracking server (1 worker) whose artifacts go to a bucket on moto."""
    from pipeline.storage import s3_client

    client = s3_client(os.environ["AWS_ENDPOINT_URL"])
    if "mlflow-artifacts" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket="mlflow-artifacts")
    port = free_port()
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        "s3://mlflow-artifacts/mlflow",
    ]
    with (folder / "log.txt").open("w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"http://127.0.0.1:{port}", proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start:\n" + (folder / "log.txt").read_text())


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(s3_endpoint, tmp_path_factory):
    url, proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield url, proc
    stop(proc)
