"""Progress of long jobs and the words of log lines. No torch.

On a terminal a job shows a tqdm bar; anywhere else (a log file, a pipe, a service's journal) a bar
would be written as carriage-return-separated frames, so `progress_bar` gives a plain line instead: one
every `PLAIN_EVERY` seconds while the job runs and one when it ends (`predict: 40 of 100 images,
2.1 images/s, 19 s`). `plural(1, "image")` is "1 image", `plural(2, "image")` "2 images".
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from tqdm.auto import tqdm

PLAIN_EVERY = 30.0  # seconds between two plain progress lines (not on a terminal)
IRREGULAR = {"class": "classes", "batch": "batches"}


def plural(n: int, noun: str) -> str:
    """`n` and the noun in the right number: 1 image, 2 images, 0 images, 1 class, 3 classes."""
    return f"{n} {noun if n == 1 else plural_noun(noun)}"


def plural_noun(noun: str) -> str:
    """image → images, class → classes."""
    return IRREGULAR.get(noun, noun + "s")


def say(message: str) -> None:
    """One line to stderr that does not break a progress bar on the terminal."""
    tqdm.write(message, file=sys.stderr)


class Bar(Protocol):
    """What jobs need of a progress display (tqdm or `PlainProgress`)."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


class PlainProgress:
    """A progress bar's stand-in off a terminal: a plain line every `every` seconds and one at the end."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO, every: float = PLAIN_EVERY) -> None:
        self.total, self.desc, self.unit, self.file, self.every = total, desc, unit, file, every
        self.n = 0
        self._started = self._said = time.monotonic()
        self._closed = False

    def line(self, now: float) -> str:
        """`desc: n of total units, rate units/s, seconds` at time `now` (time.monotonic)."""
        elapsed = now - self._started
        done = plural(self.n, self.unit) if self.total is None else f"{self.n} of {plural(self.total, self.unit)}"
        rate = f", {self.n / elapsed:.2f} {plural_noun(self.unit)}/s" if elapsed > 0 and self.n else ""
        return f"{self.desc}: {done}{rate}, {elapsed:.0f} s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._said >= self.every and (self.total is None or self.n < self.total):
            self._said = now
            print(self.line(now), file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.total != 0:  # nothing to say of a job of no items
                print(self.line(time.monotonic()), file=self.file, flush=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoProgress:
    """Progress nobody asked to see."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(
    total: int | None,
    desc: str,
    unit: str = "image",
    *,
    enabled: bool = True,
    file: TextIO | None = None,
    position: int | None = None,
    every: float = PLAIN_EVERY,
) -> tqdm | PlainProgress | NoProgress:
    """A tqdm bar on a terminal, plain periodic lines elsewhere, nothing when not `enabled` (stderr by default)."""
    out = sys.stderr if file is None else file
    if not enabled:
        return NoProgress()
    if out.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=out, position=position)
    return PlainProgress(total, desc, unit, out, every)
