"""The pipeline in this process with the tiny model: the outputs of `winclip predict` and the station's record for
each photo, `--after done|delete|keep`, unreadable photos to failed/ with the reason, a restart that scores
nothing twice, back-pressure in order, profile changes picked up between photos, every message valid."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("watchdog", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")
jsonschema = pytest.importorskip("jsonschema")

from helpers.line import make_profile, photo_bytes, wait_until
from winclip.inspection.profile import Profile
from winclip.line.journal import JOURNAL_FILE, Journal
from winclip.line.messages import schema
from winclip.line.outbox import DeliveryError
from winclip.line.run import Line, LineConfig
from winclip.service.db import Recorder
from winclip.service.revisions import Revisions

VALIDATOR = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())


class Capture:
    """A sink that keeps what it confirms; `refuse` makes it refuse everything."""

    name = "capture"

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.refuse = False

    def send(self, message_id: str, body: str) -> None:
        if self.refuse:
            raise DeliveryError("refusing")
        message = json.loads(body)
        assert message["message_id"] == message_id
        self.messages.append(message)

    def close(self) -> None:
        pass


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    inbox = tmp_path / "in"
    inbox.mkdir()
    return inbox, tmp_path / "out", make_profile(tmp_path)


@contextmanager
def running(config: LineConfig, model, sinks=(), log=None) -> Iterator[Line]:
    line = Line(config, model, sinks=list(sinks), log=log or io.StringIO())
    stop, failure = threading.Event(), []

    def go() -> None:
        try:
            line.run(stop)
        except BaseException as exc:  # noqa: BLE001 - shown by the test
            failure.append(exc)
            line.ready.set()

    thread = threading.Thread(target=go)
    thread.start()
    assert line.ready.wait(60)
    try:
        if failure:
            raise failure[0]
        yield line
    finally:
        stop.set()
        thread.join(60)
    if failure:
        raise failure[0]


def drop(inbox: Path, name: str, data: bytes) -> Path:
    """Write under a temporary name and rename into place, as cameras do."""
    path = inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".part")
    tmp.write_bytes(data)
    os.rename(tmp, path)
    return path


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def record_rows(out: Path) -> list[dict]:
    rec = Recorder(f"sqlite:///{out / 'inspections.sqlite'}")
    try:
        return list(reversed(rec.page(limit=1000)))
    finally:
        rec.close()


def test_photos_get_predicts_outputs_the_record_and_a_valid_message_and_go_to_done(folders, model):
    inbox, out, profile = folders
    sink = Capture()
    config = LineConfig(inbox, out, profile, settle_s=0.2)
    (inbox / "cam").mkdir()  # (a folder made while watching: its first photos may come by the settle time, later)
    with running(config, model, [sink]):
        for i in range(3):
            drop(inbox, f"cam/p{i}.png", photo_bytes(i))
        drop(inbox, "bad.png", b"not a png at all")
        (inbox / ".hidden.png").write_bytes(photo_bytes(9))
        (inbox / "notes.txt").write_text("not a photo")
        assert wait_until(lambda: len(sink.messages) == 4, 30)
    done = sorted(p.relative_to(inbox.parent / "done").as_posix() for p in (inbox.parent / "done").rglob("*.png"))
    assert done == ["cam/p0.png", "cam/p1.png", "cam/p2.png"]
    assert sorted(p.name for p in inbox.rglob("*") if p.is_file()) == [".hidden.png", "notes.txt"]
    failed = inbox.parent / "failed"
    assert (failed / "bad.png").read_bytes() == b"not a png at all"
    assert (failed / "bad.png.reason.txt").read_text() == "not an image file (format not recognised)\n"
    table = rows(out / "results.csv")
    assert [Path(r["path"]).name for r in table] == ["p0.png", "p1.png", "p2.png"]
    assert all((out / r["overlay"]).is_file() and (out / r["mask"]).is_file() for r in table)
    assert [r["reason"] for r in rows(out / "errors.csv")] == ["not an image file (format not recognised)"]
    records = record_rows(out)
    assert [r["filename"] for r in records] == ["cam/p0.png", "cam/p1.png", "cam/p2.png"]
    assert [r["score"] for r in records] == pytest.approx([float(r["score"]) for r in table])
    for message in sink.messages:
        VALIDATOR.validate(message)
    ok = [m for m in sink.messages if m["error"] is None]
    assert [m["record_id"] for m in ok] == [r["id"] for r in records]
    assert {m["profile"] for m in ok} == {"bottle"} and {m["profile_revision"] for m in ok} == {1}
    bad = [m for m in sink.messages if m["error"] is not None]
    assert len(bad) == 1 and bad[0]["label"] is None and bad[0]["rel"] == "bad.png"
    assert len({m["message_id"] for m in sink.messages}) == 4


def test_delete_removes_finished_photos_and_keep_leaves_them_and_a_restart_scores_nothing_twice(folders, model):
    inbox, out, profile = folders
    sink = Capture()
    with running(LineConfig(inbox, out, profile, after="delete", settle_s=0.2), model, [sink]):
        drop(inbox, "a.png", photo_bytes(1))
        drop(inbox, "bad.png", b"broken")
        assert wait_until(lambda: len(sink.messages) == 2, 30)
    assert not (inbox / "a.png").exists() and not (inbox.parent / "done").exists()
    assert (inbox.parent / "failed" / "bad.png").exists()  # unreadable photos are kept for a look

    out2 = out.parent / "out2"
    for i in range(2):
        drop(inbox, f"k{i}.png", photo_bytes(10 + i))
    first, second = Capture(), Capture()
    with running(LineConfig(inbox, out2, profile, after="keep", settle_s=0.1), model, [first]):
        assert wait_until(lambda: len(first.messages) == 2, 30)
    with running(LineConfig(inbox, out2, profile, after="keep", settle_s=0.1), model, [second]) as line:
        # the second start finds the same photos, already finished: handled without a score or a message
        assert wait_until(lambda: len(line.watcher._finished) == 2, 10)
    assert second.messages == []
    assert sorted(p.name for p in inbox.iterdir()) == ["k0.png", "k1.png"]
    assert len(rows(out2 / "results.csv")) == 2 and len(record_rows(out2)) == 2


def test_back_pressure_keeps_the_order_and_a_full_outbox_stops_scoring_until_it_drains(folders, model):
    inbox, out, profile = folders
    sink = Capture()
    sink.refuse = True
    log = io.StringIO()
    config = LineConfig(inbox, out, profile, settle_s=0.1, queue=2, batch_size=2, outbox_max=3)
    with running(config, model, [sink], log=log) as line:
        for i in range(8):
            drop(inbox, f"p{i}.png", photo_bytes(20 + i))
            time.sleep(0.01)
        assert wait_until(lambda: line.outbox.size() >= 3, 30)
        time.sleep(0.5)
        assert len(list((inbox.parent / "done").glob("*.png"))) in (3, 4)  # a batch of 2 may pass the limit by one
        assert len(list(inbox.glob("*.png"))) >= 4  # the rest waits on disk
        sink.refuse = False
        assert wait_until(lambda: len(sink.messages) == 8, 60)
    assert [m["rel"] for m in sink.messages] == [f"p{i}.png" for i in range(8)]  # the order they were written
    assert [Path(r["path"]).name for r in rows(out / "results.csv")] == [f"p{i}.png" for i in range(8)]
    assert "the outbox holds 3 messages" in log.getvalue()


def test_threshold_changes_in_the_folder_or_through_a_station_are_used_from_the_next_photo(folders, model):
    inbox, out, profile = folders
    sink = Capture()
    with running(LineConfig(inbox, out, profile, settle_s=0.1, sync_interval_s=0.1), model, [sink]) as line:
        drop(inbox, "a.png", photo_bytes(1))
        assert wait_until(lambda: len(sink.messages) == 1, 30)
        Profile.load(profile).with_thresholds(0.25).save(profile, overwrite=True)  # `winclip profile ...` in place
        assert wait_until(lambda: line.follower.served.revision == 2, 10)
        drop(inbox, "b.png", photo_bytes(2))
        assert wait_until(lambda: len(sink.messages) == 2, 30)
        with Revisions(line.recorder).locked("bottle") as row:  # what the station's PATCH does
            Profile.load(profile).with_thresholds(0.75, 0.3).save(profile, overwrite=True)
            row.write(Profile.load(profile).digest())
        assert wait_until(lambda: line.follower.served.revision == 3, 10)
        drop(inbox, "c.png", photo_bytes(3))
        assert wait_until(lambda: len(sink.messages) == 3, 30)
    got = [(m["threshold"], m["review_threshold"], m["profile_revision"]) for m in sink.messages]
    assert got == [(0.5, None, 1), (0.25, None, 2), (0.75, 0.3, 3)]
    assert [m["label"] for m in sink.messages][1] == ("anomalous" if sink.messages[1]["score"] >= 0.25 else "normal")


def test_the_tables_are_rebuilt_from_the_journal_so_a_stray_row_goes_and_failures_stay(folders, model):
    inbox, out, profile = folders
    sink = Capture()
    with running(LineConfig(inbox, out, profile, settle_s=0.1), model, [sink]):
        drop(inbox, "a.png", photo_bytes(1))
        drop(inbox, "bad.png", b"broken")
        assert wait_until(lambda: len(sink.messages) == 2, 30)
    with (out / "results.jsonl").open("a") as f:  # what a kill between steps 2 and 3 leaves
        f.write(json.dumps({"type": "result", "path": "ghost.png", "label": "normal", "regions": []}) + "\n")
    with running(LineConfig(inbox, out, profile, settle_s=0.1), model, [Capture()]):
        pass
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["type"] for r in lines] == ["header", "result"] and lines[1]["rel"] == "a.png"
    assert [r["path"] for r in rows(out / "errors.csv")] == [str(inbox.resolve() / "bad.png")]  # kept
    assert [Path(r["path"]).name for r in rows(out / "results.csv")] == ["a.png"]
    journal = Journal(out / JOURNAL_FILE, inbox)
    assert journal.counts() == {"done": 1, "failed": 1}
    journal.close()


def test_bad_settings_name_their_option(folders, tmp_path):
    inbox, out, profile = folders
    with pytest.raises(ValueError, match="--after"):
        LineConfig(inbox, out, profile, after="archive")
    with pytest.raises(ValueError, match="inside the input folder"):
        LineConfig(inbox, inbox / "out", profile)
    with pytest.raises(ValueError, match="where finished photos go"):
        LineConfig(inbox, inbox.parent / "done" / "out", profile)
    with pytest.raises(ValueError, match="--queue"):
        LineConfig(inbox, out, profile, queue=0)
    with pytest.raises(ValueError, match="not a folder"):
        LineConfig(tmp_path / "missing", out, profile)


def test_nothing_the_line_writes_goes_through_a_link(folders, model, tmp_path):
    """Issue 22, 7 for `winclip watch`: results.jsonl and a failed photo's reason are never written through a link."""
    inbox, out, profile = folders
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    failed = inbox.parent / "failed"
    failed.mkdir()
    (failed / "bad.png.reason.txt").symlink_to(precious)
    out.mkdir()
    (out / ".results.jsonl.tmp").symlink_to(precious)  # where results.jsonl used to be written first
    log, sink = io.StringIO(), Capture()
    with running(LineConfig(inbox, out, profile, settle_s=0.1), model, [sink], log=log):
        drop(inbox, "bad.png", b"broken")
        assert wait_until(lambda: len(sink.messages) == 1, 30)
        assert wait_until(lambda: "its reason written" in log.getvalue(), 10), log.getvalue()
    assert precious.read_text() == "keep me\n"
    assert (failed / "bad.png").read_bytes() == b"broken"  # the photo is where it goes, its reason not through the link
    assert "symbolic link" in log.getvalue()
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["type"] == "header"
