"""Tune's state on S3: the pyarrow filesystem Ray Tune reads and writes it through.

The endpoint is the one `open_storage` uses (``--s3-endpoint-url``, else ``AWS_ENDPOINT_URL``).
pyarrow takes a bare host[:port] as its endpoint, so an endpoint URL that carries credentials
(``http://KEY:SECRET@host:port``) gives pyarrow its host alone, never a host name that would
reach DNS lookups and error messages.

The filesystem is never given keys: Ray Tune pickles it into its state files (tuner.pkl,
experiment_state-*.json, basic-variant-state-*.json), and an ``S3FileSystem`` pickles the keys
it was given, while one built without them takes AWS's default chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, a profile, ...) wherever it is unpickled and stores nothing. The
``knitwork`` command moves the URL's credentials into those variables before Ray starts
(`knitwork_cli.environment.s3_credentials_to_environment`); other callers do the same, or get
a StorageError rather than a secret written beside the results.
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


def url_credentials(endpoint: str) -> tuple[str, str] | None:
    """The (key, secret) an S3 endpoint URL carries, URL-decoded; None when it carries none
    or is not a URL."""
    try:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        key, secret = url.username, url.password
    except ValueError:
        return None
    if not key or secret is None:
        return None
    return unquote(key), unquote(secret)


def s3_filesystem_options(endpoint: str) -> dict[str, str]:
    """pyarrow ``S3FileSystem`` arguments for an endpoint URL: ``endpoint_override`` is its
    host[:port] only and ``scheme`` its scheme; no keys (AWS's default chain). Raises
    StorageError when the URL carries credentials that are not those of the environment."""
    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    try:
        host, port = url.hostname or "", url.port
    except ValueError:
        raise StorageError(f"{redact(endpoint)}: not a valid S3 endpoint URL") from None
    if not host:
        raise StorageError(f"{redact(endpoint)}: no host in the S3 endpoint URL")
    credentials = url_credentials(endpoint)
    if credentials is not None:
        environment = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if credentials != environment:
            raise StorageError(
                f"the S3 endpoint {redact(endpoint)} carries credentials that are not those "
                "of AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: Ray Tune would store them in its "
                "state files; put them in those variables (the knitwork command does)"
            )
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    options = {"endpoint_override": host if port is None else f"{host}:{port}"}
    options["scheme"] = url.scheme or "https"
    return options
