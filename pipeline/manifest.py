"""The batch manifest: ``OUTPUT/_manifest.jsonl``, one JSON record per image.

A record says what happened to one input: ``input`` (relative name), ``output`` (URI),
``status`` (ok / failed / skipped), ``error``, ``metrics``, ``seconds``, ``config_hash``,
``seed``, ``mlflow_run_id``, ``tracked`` (False when MLflow could not record it), ``attempt``
(how many times the image has been run), ``worker`` (host:pid) and ``worker_peak_rss_mb``.
The file holds the latest record of every image ever run into OUTPUT. During a batch each
record is appended to a journal (``_manifest.journal``: one line per record, synced; on S3 one
small object each), so the cost per image stays flat however large the batch; the batch
compacts the journal into the file at its start and end (and when it is aborted), and reading
applies any journal left by a batch that died, so an interrupted batch loses nothing that
finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_NAME = "_manifest.jsonl"
JOURNAL_NAME = "_manifest.journal"


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


def parse(text: str, source: str, torn_tail: bool = False) -> dict[str, Record]:
    """The latest record per input name; a corrupt line is an error that names its line
    (``torn_tail``: a journal's unfinished last line, cut by a crash, is skipped instead)."""
    latest: dict[str, Record] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = Record(**json.loads(line))
        except (ValueError, TypeError) as err:
            if torn_tail and number == len(lines) and not text.endswith("\n"):
                break
            raise ValueError(f"{source}, line {number}: not a manifest record ({err})") from None
        latest[record.input] = record
    return latest


def render(records: list[Record]) -> bytes:
    return "".join(r.to_json() + "\n" for r in records).encode("utf-8")


class Manifest:
    """A storage's manifest: ``records`` (the latest per image), ``add`` (appended to the
    journal), ``compact`` (the journal folded into the file). ``storage`` is a
    ``pipeline.storage`` object: read, write, exists, join, append, read_appended,
    remove_appended."""

    def __init__(self, storage) -> None:
        self.storage = storage
        text = ""
        if storage.exists(MANIFEST_NAME):
            text = storage.read(MANIFEST_NAME).decode("utf-8")
        self.records = parse(text, storage.join(MANIFEST_NAME))
        journal = storage.read_appended(JOURNAL_NAME).decode("utf-8")
        self.records |= parse(journal, storage.join(JOURNAL_NAME), torn_tail=True)

    def add(self, record: Record) -> None:
        self.records[record.input] = record
        self.storage.append(JOURNAL_NAME, (record.to_json() + "\n").encode("utf-8"))

    def render(self) -> bytes:
        return render(list(self.records.values()))

    def compact(self) -> bytes:
        """Write every record to the manifest file, then drop the journal; the file's bytes."""
        data = self.render()
        self.storage.write(MANIFEST_NAME, data)
        self.storage.remove_appended(JOURNAL_NAME)
        return data
