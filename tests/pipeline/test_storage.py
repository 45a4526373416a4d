"""Storage by URI: local folders and S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import pytest

from pipeline.driver import refuse_nested
from pipeline.storage import (
    LocalStorage,
    S3Storage,
    StorageError,
    name_folds,
    open_storage,
    redact,
    safe_name,
)


def test_local_listing_is_recursive_by_extension_and_skips_hidden(tmp_path):
    for name in (
        "a.png",
        "sub/b.JPG",
        "sub/deep/c.webp",
        ".hidden.png",
        ".cache/d.png",
        "notes.txt",
        "_manifest.jsonl",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert open_storage(str(tmp_path)).list_images() == ["a.png", "sub/b.JPG", "sub/deep/c.webp"]


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "a/../../x.png", "a/../b.png", ""])
def test_names_cannot_escape_the_root(name):
    with pytest.raises(StorageError, match="not a safe relative name"):
        safe_name(name)


def test_a_listed_name_that_storage_would_fold_into_another_is_named(tmp_path):
    """A local file ``a\\b.png`` is listed as itself but read as ``a/b.png``: another file."""
    for name in ("a\\b.png", "a/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    storage = open_storage(str(tmp_path))
    assert storage.list_images() == ["a/b.png", "a\\b.png"]
    assert storage.read("a\\b.png") == b"a/b.png"  # why such a name must be refused
    assert name_folds("a/b.png") is None
    assert (
        name_folds("a\\b.png")
        == "'a\\\\b.png': not a safe relative name (it would address 'a/b.png')"
    )
    for name in ("./w.png", "p/./w.png", "x//y.png", "/z.png", "c/../d.png"):
        assert f"{name!r}: not a safe relative name" in name_folds(name)


def test_local_write_is_atomic_and_creates_folders(tmp_path):
    store = LocalStorage(tmp_path)
    store.write("x/y/z.png", b"data")
    assert (tmp_path / "x/y/z.png").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "x/y").iterdir()] == ["z.png"]  # no temp file left


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(StorageError, match=r"nowhere: no such folder"):
        open_storage(str(tmp_path / "nowhere")).list_images()


def test_s3_round_trip_and_listing(bucket, s3_endpoint):
    store = open_storage(f"s3://{bucket}/in/")
    assert isinstance(store, S3Storage) and store.endpoint_url == s3_endpoint
    for name in ("a.png", "sub/b.tif", ".hidden/c.png", "notes.txt"):
        store.write(name, name.encode())
    assert store.list_images() == ["a.png", "sub/b.tif"]
    assert store.read("sub/b.tif") == b"sub/b.tif"
    assert store.exists("a.png") and not store.exists("zzz.png")
    assert store.join("a.png") == f"s3://{bucket}/in/a.png"


def test_s3_missing_bucket_says_so(s3_endpoint):
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-here.*bucket does not exist"):
        open_storage("s3://no-such-bucket-here/x").list_images()


def test_s3_unreachable_endpoint_says_what_to_check():
    from tests.services import free_port

    store = open_storage("s3://bucket/x", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint.*--s3-endpoint-url"):
        store.list_images()


@pytest.mark.parametrize(
    "source, target, nested",
    [
        ("/data/in", "/data/in/out", True),
        ("/data/in", "/data/in", True),
        ("/data/in", "/data/out", False),
        ("s3://b/in", "s3://b/in/out", True),
        ("s3://b/in", "s3://b/input2", False),
        ("s3://b", "s3://b/out", True),
        ("s3://b/in", "s3://c/in/out", False),
    ],
)
def test_output_inside_input_is_refused(source, target, nested):
    src, dst = open_storage(source), open_storage(target)
    if nested:
        with pytest.raises(StorageError, match="outputs would be read back as inputs"):
            refuse_nested(src, dst)
    else:
        refuse_nested(src, dst)


def test_s3_denied_access_says_so(s3_endpoint):
    """A second moto server that enforces IAM: our test keys are unknown there."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from tests.services import free_port

    port = free_port()
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        store = open_storage("s3://locked-bucket/x", endpoint_url=f"http://127.0.0.1:{port}")
        with pytest.raises(StorageError, match=r"s3://locked-bucket/x: access denied"):
            store.list_images()
    finally:
        server.terminate()
        server.wait(timeout=10)


SECRET = "s3cr3t-Pa55"
AWS_LIKE = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret


@pytest.mark.parametrize(
    "text, shown",
    [
        (f"http://ann:{SECRET}@mlflow:5000", "http://ann:***@mlflow:5000"),
        (f"MLflow at https://ann:{SECRET}@h/x failed", "MLflow at https://ann:***@h/x failed"),
        (f"postgresql+psycopg2://u:{SECRET}@db/mlflow", "postgresql+psycopg2://u:***@db/mlflow"),
        (f"a http://x:{SECRET}@h b s3://k:{SECRET}@e", "a http://x:***@h b s3://k:***@e"),
        (f"AWS_SECRET_ACCESS_KEY={SECRET} next", "AWS_SECRET_ACCESS_KEY=*** next"),
        (f"aws_secret_access_key: {SECRET}", "aws_secret_access_key: ***"),
        (f"key {AWS_LIKE}.", "key ***."),
        (
            "sqlite:///mlflow.db and s3://bucket/prefix",
            "sqlite:///mlflow.db and s3://bucket/prefix",
        ),
        ("http://mlflow:5000 run 0123456789abcdef0123456789abcdef01234567", None),
        ("/work/main/out/restored/butterfly.png", None),
    ],
)
def test_redact_hides_passwords_and_secret_keys(text, shown):
    assert redact(text) == (text if shown is None else shown)


def test_redact_hides_the_environment_secret_wherever_it_appears(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert redact(f"signed with {SECRET}!") == "signed with ***!"


def test_an_unreachable_endpoint_with_credentials_is_named_without_them(monkeypatch):
    from tests.services import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ann")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "anything")
    port = free_port()
    endpoint = f"http://ann:{SECRET}@127.0.0.1:{port}"
    store = open_storage("s3://bucket/x", endpoint_url=endpoint)
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint") as info:
        store.list_images()
    assert SECRET not in str(info.value) and f"http://ann:***@127.0.0.1:{port}" in str(info.value)


def test_an_s3_storage_shows_its_endpoint_without_credentials():
    storage = open_storage("s3://b/p", "http://ann:s3cr3t-Pa55@127.0.0.1:9000")
    assert "s3cr3t" not in repr(storage) and "ann:***@127.0.0.1:9000" in repr(storage)
    assert storage.endpoint_url.endswith("@127.0.0.1:9000")  # the client still gets it
