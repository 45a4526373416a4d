"""The manifest and its journal, on a local folder and on S3 (moto's server): records are
appended one by one (the file is not rewritten per image), read back with the file, folded in
by ``compact``; a line torn by a crash at the journal's end is skipped, a corrupt line inside
is an error that names it."""

from __future__ import annotations

import pytest

from pipeline.manifest import JOURNAL_NAME, MANIFEST_NAME, Manifest, Record
from pipeline.storage import open_storage


def _record(name: str, status: str = "ok", attempt: int = 1) -> Record:
    return Record(input=name, output=f"out/{name}", status=status, attempt=attempt)


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(str(tmp_path / "out"))
    bucket = request.getfixturevalue("bucket")
    return open_storage(f"s3://{bucket}/out")


def test_records_are_journalled_then_compacted(storage):
    manifest = Manifest(storage)
    assert manifest.records == {}
    manifest.compact()
    before = storage.read(MANIFEST_NAME)
    for i in range(5):
        manifest.add(_record(f"img{i}.png"))
    manifest.add(_record("img0.png", status="failed", attempt=2))  # a later record wins
    assert storage.read(MANIFEST_NAME) == before  # appends only: the file waits for compact
    again = Manifest(storage)  # a batch that died here: the journal is read back
    assert sorted(again.records) == [f"img{i}.png" for i in range(5)]
    assert again.records["img0.png"].status == "failed"
    data = again.compact()
    assert storage.read(MANIFEST_NAME) == data and storage.read_appended(JOURNAL_NAME) == b""
    assert Manifest(storage).records == again.records


def test_a_torn_last_journal_line_is_skipped_and_a_corrupt_one_named(storage):
    manifest = Manifest(storage)
    manifest.add(_record("a.png"))
    storage.append(JOURNAL_NAME, b'{"input": "b.png", "outp')  # the crash cut this line
    assert sorted(Manifest(storage).records) == ["a.png"]
    storage.append(JOURNAL_NAME, b"\n" + (_record("c.png").to_json() + "\n").encode())
    with pytest.raises(ValueError, match=r"_manifest.journal, line 2: not a manifest record"):
        Manifest(storage)
