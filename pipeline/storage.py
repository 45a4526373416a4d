"""Where images live: a local folder or ``s3://bucket/prefix``, addressed by URI.

This module is the only place that builds boto3 clients. ``open_storage(uri)`` returns an
object that lists images by extension (recursively, hidden files skipped), reads and writes
by relative name, and never lets a name escape its root. Local writes are atomic (temporary
file, then rename); an S3 PUT is atomic by nature. Storage objects pickle into Ray workers and
build their client there.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
S3_CONNECT_SECONDS = 5  # an S3 endpoint that does not accept a connection by then is down
S3_READ_SECONDS = 60  # one S3 response (a large image) may take this long
S3_ATTEMPTS = 5  # botocore's standard retry mode: attempts per request


# scheme://user:PASSWORD@host: the password (any scheme: http, postgresql+psycopg2, s3, ...)
_URI_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]*@")
# NAME=VALUE or NAME: VALUE where the name says secret, password or token
_SECRET_SETTING = re.compile(
    r"(\b\w*(?:secret|password|passwd|token)\w*\s*[=:]\s*)[^\s,;'\"]+", re.IGNORECASE
)
# 40 characters of base64 in upper and lower case with a digit, '/' or '+': an AWS secret key
_AWS_SECRET = re.compile(
    r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*[A-Z])"
    r"(?=[A-Za-z0-9/+]*[0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
_SHORTEST_SECRET = 6  # an environment value shorter than this is not hunted for in text


def redact(text: str) -> str:
    """``text`` fit to print, log or record: the password of a URI (``scheme://user:***@host``),
    ``…SECRET…=value`` settings, AWS-secret-key-like strings and the values of the secret
    variables in this process's environment (``SECRET_VARIABLES``) become ``***``."""
    text = _URI_PASSWORD.sub(r"\1:***@", text)
    text = _SECRET_SETTING.sub(r"\1***", text)
    text = _AWS_SECRET.sub("***", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= _SHORTEST_SECRET:
            text = text.replace(value, "***")
    return text


class StorageError(OSError):
    """A storage problem, named by URI, with what to do about it (may be transient)."""


class NotFound(StorageError):
    """The file or object does not exist: not transient, never worth a retry."""


def safe_name(name: str) -> str:
    """A relative POSIX name that cannot escape its root (no '..', no absolute path) and names
    exactly one object (no empty segment: S3 keeps ``a//b`` apart from ``a/b``)."""
    path = PurePosixPath(name.replace("\\", "/"))
    segments = name.replace("\\", "/").split("/")  # PurePosixPath would fold "a//b" into "a/b"
    if path.is_absolute() or not path.parts or any(p in ("..", "") for p in segments):
        raise StorageError(
            f"{name!r}: not a safe relative name (absolute, '..' or an empty segment)"
        )
    normal = posixpath.normpath(str(path))
    if normal.startswith("../") or normal in (".", ".."):
        raise StorageError(f"{name!r}: not a safe relative name")
    return normal


def name_folds(name: str) -> str | None:
    """Why a listed ``name`` would not address itself, or None. ``safe_name`` folds ``.``
    segments and backslashes, so an S3 key ``p/./w.png`` (or a local ``a\\b.png``) would be
    read and written as ``w.png`` (``a/b.png``): another object, one output for two inputs."""
    try:
        normal = safe_name(name)
    except StorageError as err:
        return str(err)
    if normal != name:
        return f"{name!r}: not a safe relative name (it would address {normal!r})"
    return None


def _is_listed(name: str) -> bool:
    parts = PurePosixPath(name).parts
    hidden = any(p.startswith(".") for p in parts)
    return not hidden and name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class LocalStorage:
    root: Path

    @property
    def uri(self) -> str:
        return str(self.root)

    def join(self, name: str) -> str:
        return str(self.root / safe_name(name))

    def list_images(self) -> list[str]:
        if not self.root.exists():
            raise StorageError(f"{self.root}: no such folder")
        if not self.root.is_dir():
            raise StorageError(f"{self.root}: not a folder")
        names = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(self.root)
            names += [(rel / f).as_posix() for f in filenames]
        return sorted(n for n in names if _is_listed(n))

    def exists(self, name: str) -> bool:
        return (self.root / safe_name(name)).is_file()

    def read(self, name: str) -> bytes:
        path = self.root / safe_name(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None
        except OSError as err:
            raise StorageError(f"{path}: cannot read ({err.strerror})") from None

    def write(self, name: str, data: bytes) -> None:
        from knitwork.io import atomic_file

        with atomic_file(self.root / safe_name(name)) as handle:
            handle.write(data)

    def append(self, name: str, data: bytes) -> None:
        """Add ``data`` at the end of ``name`` (created if missing), synced to disk."""
        path = self.root / safe_name(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise StorageError(f"{path}: cannot append ({err.strerror})") from None

    def read_appended(self, name: str) -> bytes:
        """Everything appended to ``name`` (empty if nothing was)."""
        return self.read(name) if self.exists(name) else b""

    def remove_appended(self, name: str) -> None:
        (self.root / safe_name(name)).unlink(missing_ok=True)


@dataclass(kw_only=True)
class S3Storage:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    _client: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:  # the endpoint may carry credentials: shown redacted
        endpoint = redact(self.endpoint_url) if self.endpoint_url else None
        return (
            f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={endpoint!r})"
        )

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"] = None  # clients do not pickle: each process builds its own
        return state

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        return self._client

    def key(self, name: str) -> str:
        return posixpath.join(self.prefix, safe_name(name)) if self.prefix else safe_name(name)

    def join(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def list_images(self) -> list[str]:
        names = []
        start = f"{self.prefix}/" if self.prefix else ""
        with s3_errors(self.uri, self.endpoint_url):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                names += [obj["Key"][len(start) :] for obj in page.get("Contents", [])]
        return sorted(n for n in names if n and _is_listed(n))

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with s3_errors(self.join(name), self.endpoint_url, missing_ok=True):
                self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError:
            return False
        return True

    def read(self, name: str) -> bytes:
        with s3_errors(self.join(name), self.endpoint_url):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return response["Body"].read()

    def write(self, name: str, data: bytes) -> None:
        with s3_errors(self.join(name), self.endpoint_url):
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    # S3 objects cannot grow: what is appended to NAME is kept as parts NAME/<time>-<id>,
    # read back in the order they were written.

    def append(self, name: str, data: bytes) -> None:
        part = f"{safe_name(name)}/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self.write(part, data)

    def _parts(self, name: str) -> list[str]:
        start = self.key(name) + "/"
        keys: list[str] = []
        with s3_errors(self.join(name), self.endpoint_url):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                keys += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(keys)

    def read_appended(self, name: str) -> bytes:
        chunks = []
        for key in self._parts(name):
            with s3_errors(f"s3://{self.bucket}/{key}", self.endpoint_url):
                chunks.append(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return b"".join(chunks)

    def remove_appended(self, name: str) -> None:
        keys = self._parts(name)
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            with s3_errors(self.join(name), self.endpoint_url):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})


Storage = LocalStorage | S3Storage


def open_storage(uri: str, endpoint_url: str | None = None) -> Storage:
    """Storage for a local path or ``s3://bucket/prefix``. The S3 endpoint comes from
    ``endpoint_url``, else ``AWS_ENDPOINT_URL``, else AWS; credentials from boto3's chain."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"{uri}: no bucket name (expected s3://bucket/prefix)")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        return S3Storage(bucket=bucket, prefix=prefix.strip("/"), endpoint_url=endpoint)
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported scheme; use a local path or s3://bucket/prefix")
    return LocalStorage(Path(uri).expanduser().resolve())


def s3_client(endpoint_url: str | None = None, credentials: tuple[str, str] | None = None):
    """A boto3 S3 client with standard retries and bounded timeouts; ``credentials`` (access
    key, secret) given explicitly, else boto3's chain (environment, profile, ...)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"},
        connect_timeout=S3_CONNECT_SECONDS,
        read_timeout=S3_READ_SECONDS,
        s3={"addressing_style": "path"},
    )
    keys = {}
    if credentials is not None:
        keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]}
        keys["region_name"] = "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint_url, config=config, **keys)


class s3_errors:
    """Turn botocore errors into StorageErrors that name the URI and say what to do."""

    def __init__(self, uri: str, endpoint: str | None, missing_ok: bool = False) -> None:
        self.uri, self.endpoint, self.missing_ok = uri, endpoint, missing_ok

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None:
            return False
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        where = redact(self.endpoint) if self.endpoint else "AWS"
        if isinstance(err, EndpointConnectionError):
            raise StorageError(
                f"{self.uri}: cannot reach the S3 endpoint {where}: check --s3-endpoint-url / "
                "AWS_ENDPOINT_URL and that the server is up"
            ) from None
        if isinstance(err, NoCredentialsError):
            raise StorageError(
                f"{self.uri}: no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "or a profile"
            ) from None
        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                if self.missing_ok:
                    return False
                raise NotFound(f"{self.uri}: no such object") from None
            raise StorageError(_client_error_message(self.uri, code, where)) from None
        return False


def _client_error_message(uri: str, code: str, where: str) -> str:
    if code == "NoSuchBucket":
        return f"{uri}: the bucket does not exist on {where}: create it or fix the URI"
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"{uri}: access denied ({code}) by {where}: check the credentials and policy"
    return f"{uri}: S3 error {code} from {where}"
