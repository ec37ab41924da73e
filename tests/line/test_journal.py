"""The journal: a kill between any two steps of a photo leaves a state the next start finishes or undoes, and the
outbox gets a finished photo's message in the same transaction, never an unfinished one's."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

pytest.importorskip("sqlalchemy", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")

from winclip.line.journal import DONE, FAILED, SCORING, Entry, Journal, Version
from winclip.line.outbox import Outbox
from winclip.line.run import recorded_id
from winclip.service.db import Record, Recorder

V = Version("a/b.png", 123, 456_000_000_001, "f" * 64)


def entry(version: Version, time: datetime, folder: str) -> Entry:
    mid = version.message_id(folder)
    message = {"message_id": mid, "profile": "bottle", "label": "normal"}
    return Entry(mid, version, SCORING, time.isoformat(), None, None, {"path": version.rel, "message_id": mid}, message)


def row(version: Version, time: datetime) -> Record:
    return Record(
        time=time, profile="bottle", filename=version.rel, image_sha256=version.sha256, score=0.1, threshold=0.5,
        label="normal", confidence=0.9, regions=[], latency_ms=1.0,
    )  # fmt: skip


def test_the_message_id_is_the_same_for_the_same_version_and_differs_otherwise(tmp_path):
    a = V.message_id("/in")
    assert a == Version("a/b.png", 123, 456_000_000_001, "f" * 64).message_id("/in") and len(a) == 32
    others = [
        Version("a/c.png", 123, 456_000_000_001, "f" * 64), Version("a/b.png", 124, 456_000_000_001, "f" * 64),
        Version("a/b.png", 123, 456_000_000_002, "f" * 64), Version("a/b.png", 123, 456_000_000_001, "e" * 64),
    ]  # fmt: skip
    assert len({a, *(v.message_id("/in") for v in others), V.message_id("/other")}) == 6


def test_a_kill_before_the_record_drops_the_row_and_one_after_it_finishes_the_photo(tmp_path):
    recorder = Recorder(f"sqlite:///{tmp_path / 'rec.sqlite'}")
    journal = Journal(tmp_path / "line.sqlite", tmp_path / "in")
    outbox = Outbox(tmp_path / "line.sqlite")
    try:
        t1, t2 = datetime(2026, 12, 1, 8, 0, 0, 123456, timezone.utc), datetime(2026, 12, 1, 8, 0, 1, 5, timezone.utc)
        v2 = Version("c.png", 9, 9, "a" * 64)
        unrecorded, recorded = entry(V, t1, journal.folder), entry(v2, t2, journal.folder)
        journal.begin(unrecorded)  # killed after step 1
        journal.begin(recorded)
        (rid,) = recorder.record([row(v2, t2)])  # killed after step 3
        recorder.record([row(V, t2)])  # another time: not this entry's row
        assert recorded_id(recorder, unrecorded) is None and recorded_id(recorder, recorded) == rid
        assert outbox.size() == 0 and journal.find(V).state == SCORING
        assert journal.recover(lambda e: recorded_id(recorder, e), ["mqtt", "webhook"]) == (1, 1)
        assert journal.find(V) is None  # scored again when it is found in the folder
        done = journal.find(v2)
        assert (done.state, done.record_id, done.message["record_id"]) == (DONE, rid, rid)
        assert [outbox.head(s).message_id for s in ("mqtt", "webhook")] == [recorded.message_id] * 2
        assert list(journal.finished()) == [recorded.record]
        assert journal.recover(lambda e: 1 / 0, ["mqtt"]) == (0, 0)  # nothing left half done
    finally:
        outbox.close()
        journal.close()
        recorder.close()


def test_commit_and_fail_put_each_message_once_per_sink_in_finishing_order(tmp_path):
    journal = Journal(tmp_path / "line.sqlite", tmp_path / "in")
    outbox = Outbox(tmp_path / "line.sqlite", capacity=3)
    try:
        t = datetime(2026, 12, 1, tzinfo=timezone.utc)
        versions = [Version(f"p{i}.png", i, i, str(i) * 64) for i in range(3)]
        entries = [entry(v, t, journal.folder) for v in versions]
        journal.begin(entries[1])
        journal.fail(entries[0], "not an image", ["mqtt"])
        journal.commit(entries[1].message_id, 7, ["mqtt"])
        journal.commit(entries[1].message_id, 7, ["mqtt"])  # twice (a retried step): still one message
        journal.begin(entries[2])
        journal.commit(entries[2].message_id, 8, ["mqtt"])
        assert outbox.size("mqtt") == 3 and outbox.full
        order = []
        while (head := outbox.head("mqtt")) is not None:
            order.append(head.message_id)
            outbox.delivered(head.seq)
        assert order == [e.message_id for e in entries]
        assert journal.failures() == [("p0.png", "not an image")]
        assert journal.counts() == {FAILED: 1, DONE: 2}
    finally:
        outbox.close()
        journal.close()


def test_a_journal_belongs_to_one_watched_folder(tmp_path):
    Journal(tmp_path / "line.sqlite", tmp_path / "in").close()
    with pytest.raises(ValueError, match="journal is of the watched folder"):
        Journal(tmp_path / "line.sqlite", tmp_path / "elsewhere")
