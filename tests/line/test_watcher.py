"""Complete-file detection: a photo is handed out only once it is complete (closed after writing, renamed into
place, or unchanged for the settle time), never as a partial, temporary, hidden or growing file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("watchdog", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")

from helpers.line import photo_bytes, write_slowly
from winclip.line.watcher import Stat, Watcher, is_photo


def names(taken: list) -> list[str]:
    return [p.name for p, _ in taken]


def drain(w: Watcher, seconds: float) -> list[str]:
    """Everything handed out within `seconds`, finishing each."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path, stat in w.take(100, timeout=0.05):
            out.append(path.name)
            w.finish(path, stat)
    return out


def test_photo_names_exclude_temporary_hidden_and_other_files(tmp_path):
    top = tmp_path
    ok = ["a.png", "b.JPG", "sub/c.tiff"]
    never = ["a.png.part", "a.png~", ".a.png", ".tmp/a.png", "a.part.png", "a.tmp.png", "notes.txt", "a.png.crdownload"]
    assert [is_photo(top / n, top) for n in ok] == [True] * 3
    assert [is_photo(top / n, top) for n in never] == [False] * len(never)
    assert not is_photo(tmp_path.parent / "x.png", top)  # outside the folder


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "settle"])
def test_a_temporary_name_is_ignored_and_the_renamed_photo_is_taken_once(tmp_path, inotify):
    w = Watcher(tmp_path, settle_s=0.2, inotify=inotify)
    try:
        assert w.mode == ("inotify" if inotify else "settle")
        data = photo_bytes(0)
        part = tmp_path / "a.png.part"
        with part.open("wb") as f:
            f.write(data[:100])
            f.flush()
            assert drain(w, 0.3) == []  # a partial file under a temporary name
            f.write(data[100:])
        assert drain(w, 0.3) == []  # complete, but still a temporary name
        os.rename(part, tmp_path / "a.png")
        assert drain(w, 0.6) == ["a.png"]
        assert drain(w, 0.3) == []  # finished: not handed out again while unchanged
    finally:
        w.close()


def test_inotify_completes_on_close_without_waiting_for_the_settle_time(tmp_path):
    w = Watcher(tmp_path, settle_s=30.0)  # the settle time would take 30 s
    try:
        (tmp_path / "a.png").write_bytes(photo_bytes(1))  # closed after writing
        start = time.monotonic()
        taken = w.take(10, timeout=5)
        assert names(taken) == ["a.png"] and time.monotonic() - start < 2
        assert taken[0][1] == Stat.of(tmp_path / "a.png")
    finally:
        w.close()


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "settle"])
def test_a_growing_file_is_never_handed_out_until_it_is_complete(tmp_path, inotify):
    w = Watcher(tmp_path, settle_s=0.4, inotify=inotify)
    data = photo_bytes(2, size=256)
    path = tmp_path / "slow.png"
    seen: list[tuple[str, int]] = []
    try:
        with path.open("wb") as f:  # written in place, kept open, a chunk every 0.1 s (< settle)
            for start in range(0, len(data), len(data) // 10):
                f.write(data[start : start + len(data) // 10])
                f.flush()
                for p, stat in w.take(10, timeout=0.1):
                    seen.append((p.name, stat.size))
        assert seen == []  # never while it grew
        got = w.take(10, timeout=3)
        assert [(p.name, s.size) for p, s in got] == [("slow.png", len(data))]
    finally:
        w.close()


def test_settle_mode_waits_for_the_settle_time(tmp_path):
    w = Watcher(tmp_path, settle_s=0.6, inotify=False)
    try:
        (tmp_path / "a.png").write_bytes(photo_bytes(3))
        start = time.monotonic()
        taken = w.take(10, timeout=5)
        assert names(taken) == ["a.png"]
        assert time.monotonic() - start >= 0.6
    finally:
        w.close()


def test_a_photo_changed_while_handled_waits_for_its_next_completion(tmp_path):
    w = Watcher(tmp_path, settle_s=0.3, inotify=False)
    try:
        path = tmp_path / "a.png"
        path.write_bytes(photo_bytes(4))
        (taken,) = w.take(10, timeout=3)
        path.write_bytes(photo_bytes(5))  # rewritten while scored
        w.retry(path)
        again = w.take(10, timeout=3)
        assert [(p, s) for p, s in again] == [(path, Stat.of(path))] and again[0][1] != taken[1]
    finally:
        w.close()


def test_photos_written_by_several_writers_are_each_taken_once_and_never_partial(tmp_path):
    w = Watcher(tmp_path, settle_s=0.5)
    data = {f"w{k}_{i}.png": photo_bytes(10 * k + i, size=96) for k in range(3) for i in range(5)}

    def writer(k: int) -> None:
        for i in range(5):
            name = f"w{k}_{i}.png"
            write_slowly(tmp_path / name, data[name], chunks=5, pause=0.01)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    got: list[tuple[str, bytes]] = []
    try:
        deadline = time.monotonic() + 10
        while len(got) < len(data) and time.monotonic() < deadline:
            for path, stat in w.take(4, timeout=0.1):
                got.append((path.name, path.read_bytes()))
                w.finish(path, stat)
    finally:
        for t in threads:
            t.join()
        w.close()
    assert len(got) == 15
    assert sorted(n for n, _ in got) == sorted(data)  # each once
    assert all(body == data[n] for n, body in got)  # complete when handed out


def test_the_queue_is_bounded_and_the_rest_waits_on_disk_in_order(tmp_path):
    for i in range(7):
        p = tmp_path / f"p{i}.png"
        p.write_bytes(photo_bytes(i))
        os.utime(p, ns=(1_000_000_000 * (100 + i), 1_000_000_000 * (100 + i)))
    w = Watcher(tmp_path, settle_s=0.1, capacity=3, inotify=False)
    try:
        time.sleep(0.15)
        first = w.take(1, timeout=3)
        assert names(first) == ["p0.png"]
        assert len(w.ready) == 2 and w.waiting == 4  # 3 held in memory (one handed out), 4 wait on disk
        order = names(first)
        for path, _ in first:
            path.unlink()
            w.finish(path, None)
        while len(order) < 7:
            for path, _ in w.take(1, timeout=2):
                order.append(path.name)
                path.unlink()
                w.finish(path, None)
        assert order == [f"p{i}.png" for i in range(7)]
    finally:
        w.close()


def test_a_photo_completed_after_room_frees_does_not_pass_older_ones_waiting_on_disk(tmp_path):
    """inotify: b completes while the queue is full (it waits on disk); c completes after a is taken: b first."""
    w = Watcher(tmp_path, settle_s=0.1, capacity=1, inotify=True)
    try:
        for name in ("a.png", "b.png"):
            (tmp_path / name).with_suffix(".part").write_bytes(photo_bytes(len(name)))
            os.rename((tmp_path / name).with_suffix(".part"), tmp_path / name)
            time.sleep(0.02)
        time.sleep(0.3)  # both events arrive: a fills the queue, b waits
        first = w.take(1, timeout=2)
        assert names(first) == ["a.png"]
        w.finish(first[0][0], None)
        (tmp_path / "c.part").write_bytes(photo_bytes(9))
        os.rename(tmp_path / "c.part", tmp_path / "c.png")
        time.sleep(0.3)  # c's event is queued before the next take drains it
        order = []
        while len(order) < 2:
            for path, stat in w.take(1, timeout=2):
                order.append(path.name)
                w.finish(path, stat)
        assert order == ["b.png", "c.png"]
    finally:
        w.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--queue"):
        Watcher(Path("."), capacity=0, inotify=False)
    with pytest.raises(ValueError, match="--settle-seconds"):
        Watcher(Path("."), settle_s=-1, inotify=False)
