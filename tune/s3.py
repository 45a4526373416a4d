"""Tune's state on S3: the pyarrow filesystem Ray Tune reads and writes it through.

The endpoint is the one `open_storage` uses (``--s3-endpoint-url``, else ``AWS_ENDPOINT_URL``).
pyarrow takes a bare host[:port] as its endpoint, so an endpoint URL that carries credentials
(``http://KEY:SECRET@host:port``) is split: the host goes to pyarrow as the endpoint and the
credentials as the access and secret keys, never as part of a host name that would reach
DNS lookups and error messages.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from pipeline.storage import StorageError, redact


def ray_storage(uri: str, endpoint: str | None):
    """(path, pyarrow filesystem or None) for Ray: S3 through the configured endpoint, or
    pyarrow's own resolution of AWS when there is none."""
    if not uri.startswith("s3://"):
        return uri, None
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    if not endpoint:
        return uri, None  # pyarrow resolves AWS itself
    from pyarrow import fs

    return uri[len("s3://") :], fs.S3FileSystem(**s3_filesystem_options(endpoint))


def s3_filesystem_options(endpoint: str) -> dict[str, str]:
    """pyarrow ``S3FileSystem`` arguments for an endpoint URL: ``endpoint_override`` is its
    host[:port] only and ``scheme`` its scheme; a key and secret in the URL (URL-encoded)
    become ``access_key``/``secret_key``, else pyarrow takes AWS's default chain."""
    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    try:
        host, port = url.hostname or "", url.port
    except ValueError:
        raise StorageError(f"{redact(endpoint)}: not a valid S3 endpoint URL") from None
    if not host:
        raise StorageError(f"{redact(endpoint)}: no host in the S3 endpoint URL")
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    options = {"endpoint_override": host if port is None else f"{host}:{port}"}
    options["scheme"] = url.scheme or "https"
    if url.username and url.password is not None:
        options["access_key"] = unquote(url.username)
        options["secret_key"] = unquote(url.password)
    return options


def credentials_warning(uri: str, endpoint: str | None) -> str | None:
    """A warning when Tune's state goes to S3 through an endpoint URL with credentials: Ray
    Tune pickles its storage filesystem, keys included, into the state it keeps there
    (tuner.pkl, experiment_state-*.json), so the secret is stored beside the results."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    if not (uri.startswith("s3://") and endpoint):
        return None
    if "secret_key" not in s3_filesystem_options(endpoint):
        return None
    return (
        f"warning: the S3 endpoint {redact(endpoint)} carries credentials; Ray Tune keeps them "
        f"in its state files (tuner.pkl, experiment_state-*.json) under {uri}: prefer "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
    )
