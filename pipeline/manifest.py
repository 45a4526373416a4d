"""The batch manifest: ``OUTPUT/_manifest.jsonl``, one JSON record per image.

A record says what happened to one input: ``input`` (relative name), ``output`` (URI),
``status`` (ok / failed / skipped), ``error``, ``metrics``, ``seconds``, ``config_hash``,
``seed``, ``mlflow_run_id``, ``tracked`` (False when MLflow could not record it), ``attempt``
(how many times the image has been run), ``worker`` (host:pid) and ``worker_peak_rss_mb``.
The file holds the latest record of every image ever run into OUTPUT and is rewritten
atomically after each image, so an interrupted batch loses nothing that finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_NAME = "_manifest.jsonl"


@dataclass(kw_only=True)
class Record:
    input: str
    output: str
    status: str  # "ok", "failed" or "skipped"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    config_hash: str = ""
    seed: int = 0
    mlflow_run_id: str | None = None
    tracked: bool = False
    attempt: int = 1
    worker: str = ""  # host:pid of the process that ran the fit
    worker_peak_rss_mb: float | None = None  # that process's peak resident memory so far

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False, default=str)


def config_hash(payload: dict[str, Any]) -> str:
    """A short stable hash of everything that decides an image's result."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse(text: str, source: str) -> dict[str, Record]:
    """The latest record per input name; a corrupt line is an error that names its line."""
    latest: dict[str, Record] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = Record(**json.loads(line))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{source}, line {number}: not a manifest record ({err})") from None
        latest[record.input] = record
    return latest


def render(records: list[Record]) -> bytes:
    return "".join(r.to_json() + "\n" for r in records).encode("utf-8")
