"""The soak scenario of issue 24, sized by its arguments: photos written into IN by several writers (slowly, in
chunks, under temporary names renamed at the end) while `winclip watch` runs as a subprocess that is SIGKILLed at
random moments and restarted, and the MQTT broker is stopped for a while. Used by tests/line/test_soak.py (small)
and benchmarks/line_soak.py (the full scenario), which print `SoakResult`."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .line import MODEL_ARGS, Broker, Subscriber, make_profile, photo_bytes, wait_until, write_slowly

READY = "winclip watch: "  # the line a started watcher prints once it watches


@dataclass
class SoakResult:
    """What the scenario produced, and the checks' inputs."""

    photos: int
    kills: int
    outage_s: float
    seconds: float = 0.0
    written: dict[str, str] = field(default_factory=dict)  # rel → sha256 of the complete photo
    result_rows: list[dict] = field(default_factory=list)  # results.jsonl rows
    record_rows: list[tuple[str, str]] = field(default_factory=list)  # (filename, image_sha256) of the record
    messages: list[dict] = field(default_factory=list)  # on <prefix>/<profile>/results, in arrival order
    finished_order: list[str] = field(default_factory=list)  # message ids in the journal's finishing order
    done_files: list[str] = field(default_factory=list)
    left_in: list[str] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    starts: int = 0
    recovered: tuple[int, int] = (0, 0)  # photos a kill left half done: finished at restart, scored again

    @property
    def duplicates(self) -> int:
        """Copies of a message received more than once (QoS 1)."""
        return len(self.messages) - len({m["message_id"] for m in self.messages})

    def table(self) -> str:
        """The figures, one per line."""
        ids = {m["message_id"] for m in self.messages}
        partial = sum(self.written.get(f) != sha for f, sha in self.record_rows)
        return "\n".join((
            f"photos written            {len(self.written)} (by 4 writers, in chunks, temp names renamed)",
            f"watch starts / SIGKILLs   {self.starts} / {self.kills}",
            f"broker stopped for        {self.outage_s:g} s",
            f"half done at a kill       {self.recovered[0]} finished at restart, {self.recovered[1]} scored again",
            f"results.jsonl rows        {len(self.result_rows)} ({len({r['rel'] for r in self.result_rows})} distinct)",
            f"record rows               {len(self.record_rows)} ({len({f for f, _ in self.record_rows})} distinct)",
            f"MQTT messages received    {len(self.messages)} ({len(ids)} distinct ids, {self.duplicates} duplicates)",
            f"partial files scored      {partial}",
            f"in order (first copies)   {first_copies(self.messages) == self.finished_order}",
            f"done/ failed/ left in IN  {len(self.done_files)} / {len(self.failed_files)} / {len(self.left_in)}",
            f"wall time                 {self.seconds:.1f} s",
        ))  # fmt: skip


def first_copies(messages: list[dict]) -> list[str]:
    """Message ids in the order their first copy arrived."""
    seen: dict[str, None] = {}
    for m in messages:
        seen.setdefault(m["message_id"], None)
    return list(seen)


class Watch:
    """`winclip watch` as a subprocess, its stderr in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.mark = log.read_text().count(READY) if log.exists() else 0
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with log.open("a") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "winclip", "watch", *args], stdout=f, stderr=f, env=env)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"winclip watch exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        return self.log.read_text().count(READY) > self.mark

    def freeze_when(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Stop the process (SIGSTOP) at a moment `condition` holds, so a kill lands there and not just after;
        False (and running) if it never held within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.send_signal(signal.SIGSTOP)
            if condition():
                return True
            self.proc.send_signal(signal.SIGCONT)
            time.sleep(0.002)
        return False

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def finished(out: Path) -> int:
    """Photos the journal holds as finished (0 before it exists)."""
    try:
        with sqlite3.connect(out / "line.sqlite", timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM photos WHERE state != 'scoring'").fetchone()[0]
    except sqlite3.Error:
        return 0


def half_done(out: Path) -> bool:
    """Whether a photo is between its journal's steps 1 and 4 right now."""
    try:
        with sqlite3.connect(out / "line.sqlite", timeout=10) as conn:
            return conn.execute("SELECT 1 FROM photos WHERE state = 'scoring' LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False


def soak(
    folder: Path, *, photos: int = 200, writers: int = 4, kills: int = 5, outage_s: float = 30.0,
    kill_window_s: float = 3.0, write_span_s: float = 60.0, seed: int = 0, timeout_s: float = 900.0,
) -> SoakResult:  # fmt: skip
    """Run the scenario in `folder` (module docstring) and collect what it produced."""
    rnd = random.Random(seed)
    inbox, out = folder / "in", folder / "out"
    inbox.mkdir(parents=True)
    profile = make_profile(folder)
    broker = Broker(folder)
    sub = Subscriber(broker.port, "factory/line1/bottle/results")
    result = SoakResult(photos, kills, outage_s)
    args = [str(inbox), "--profile", str(profile), "--out", str(out), "--mqtt", broker.url, "--settle-seconds", "1",
            "--threads", "1", "--batch-size", "4", *MODEL_ARGS]  # fmt: skip
    log = folder / "watch.log"
    data = {f"w{k}/p{i:03d}.png": photo_bytes(1000 + i, size=96) for i in range(photos) for k in [i % writers]}
    result.written = {rel: hashlib.sha256(b).hexdigest() for rel, b in data.items()}
    names = sorted(data)
    start = time.monotonic()

    gap = write_span_s * writers / photos  # each writer's photos spread over about `write_span_s`

    def writer(k: int) -> None:
        for rel in names[k::writers]:
            write_slowly(inbox / rel, data[rel], chunks=4, pause=rnd.uniform(0.005, 0.03))
            time.sleep(rnd.uniform(0.0, 2 * gap))

    for k in range(writers):
        (inbox / f"w{k}").mkdir()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    watch = Watch(args, log)
    result.starts = 1
    try:
        assert wait_until(watch.ready, 120), "the watcher did not start"
        for t in threads:
            t.start()
        outage_after = rnd.randrange(kills + 1)  # the broker goes down after this many kills
        for k in range(kills + 1):
            if k == outage_after and outage_s > 0:
                broker.stop()
                time.sleep(outage_s)
                broker.start()
            if k == kills:
                break
            time.sleep(rnd.uniform(0.05, kill_window_s))  # a random moment: waiting, reading, scoring, ...
            if k % 2 == 0:  # ... or, every other kill, the moment a photo is half done (steps 1-3 of the journal)
                watch.freeze_when(lambda: half_done(out), 10)
            watch.kill()
            watch = Watch(args, log)
            result.starts += 1
            assert wait_until(watch.ready, 120), "the watcher did not restart"
        for t in threads:
            t.join()
        assert wait_until(lambda: finished(out) == photos, timeout_s), f"{finished(out)} of {photos} finished"
        assert wait_until(lambda: len({m["message_id"] for m in messages(sub)}) >= photos, timeout_s)
        assert watch.stop() == 0
    finally:
        if watch.proc.poll() is None:
            watch.kill()
        result.seconds = time.monotonic() - start
        result.messages = messages(sub)
        sub.close()
        broker.stop()
    collect(result, inbox, out)
    found = re.findall(r"after a stop: (\d+) photo\(s\) finished, (\d+) to score again", log.read_text())
    result.recovered = (sum(int(a) for a, _ in found), sum(int(b) for _, b in found))
    return result


def messages(sub: Subscriber) -> list[dict]:
    return [m for m in sub.on("results") if isinstance(m, dict)]


def collect(result: SoakResult, inbox: Path, out: Path) -> None:
    """Read the outputs: results.jsonl, the record, the journal's order, the folders."""
    result.result_rows = [r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
                          if r["type"] == "result"]  # fmt: skip
    with sqlite3.connect(out / "inspections.sqlite") as conn:
        result.record_rows = conn.execute("SELECT filename, image_sha256 FROM inspections ORDER BY id").fetchall()
    with sqlite3.connect(out / "line.sqlite") as conn:
        result.finished_order = [r[0] for r in conn.execute("SELECT message_id FROM photos ORDER BY finished")]
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) if d.exists() else []
    result.done_files = files(inbox.parent / "done")
    result.failed_files = files(inbox.parent / "failed")
    result.left_in = files(inbox)
