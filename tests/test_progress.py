"""Progress off a terminal is plain periodic lines (never tqdm frames), on one a bar; words in the right number."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from winclip.progress import NoProgress, PlainProgress, plural, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("n", "noun", "text"),
    [(0, "image", "0 images"), (1, "image", "1 image"), (2, "image", "2 images"), (1, "class", "1 class"),
     (3, "class", "3 classes"), (1, "calibration image", "1 calibration image")],
)  # fmt: skip
def test_plural(n, noun, text):
    assert plural(n, noun) == text


def test_off_a_terminal_progress_is_plain_lines_at_most_every_period_and_one_at_the_end(monkeypatch):
    clock = iter([0.0, 1.0, 31.0, 32.0, 62.0, 70.0, 71.0])
    monkeypatch.setattr("winclip.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress_bar(5, "predict", file=out)
    assert isinstance(bar, PlainProgress)
    with bar:
        for _ in range(5):
            bar.update(1)  # at 1 s (quiet), 31 s (a line), 32 s (quiet), 62 s (a line), 70 s (the last: quiet)
    # closed at 71 s: the last line
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3, lines
    assert lines[0].startswith("predict: 2 of 5 images, ") and lines[0].endswith(", 31 s")
    assert lines[1].startswith("predict: 4 of 5 images, ")
    assert lines[2] == "predict: 5 of 5 images, 0.07 images/s, 71 s"


def test_on_a_terminal_a_bar_and_disabled_nothing():
    term = Terminal()
    bar = progress_bar(3, "predict", file=term)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    quiet = io.StringIO()
    assert isinstance(progress_bar(3, "predict", file=quiet, enabled=False), NoProgress)
    assert quiet.getvalue() == ""
