"""Issue 22, writing into an output folder (winclip.files): nothing is ever written through a symbolic link,
files are created exclusively or replaced by a rename, and what is read is refused unless a regular file."""

from __future__ import annotations

import os
import time

import pytest

from winclip.files import LinkError, NotRegularError, open_new, open_regular, write_new


def test_write_new_creates_folders_and_replaces_only_regular_files(tmp_path):
    write_new(tmp_path, "a/b/c.png", b"one")
    assert (tmp_path / "a" / "b" / "c.png").read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        write_new(tmp_path, "a/b/c.png", b"two")
    write_new(tmp_path, "a/b/c.png", b"two", replace=True)
    assert (tmp_path / "a" / "b" / "c.png").read_bytes() == b"two"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["c.png"]  # no temporary file left


@pytest.mark.parametrize("replace", [False, True])
def test_nothing_is_written_through_a_link_anywhere_on_the_path(tmp_path, replace):
    root, outside = tmp_path / "out", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    precious = outside / "precious.txt"
    precious.write_text("precious")
    os.symlink(precious, root / "file.png")
    os.symlink(outside, root / "folder")
    os.symlink(tmp_path / "missing", root / "dangling.png")
    for rel in ("file.png", "folder/new.png", "folder/precious.txt", "dangling.png"):
        with pytest.raises(LinkError) as err:
            write_new(root, rel, b"PNG", replace=replace)
        assert "symbolic link" in str(err.value) and "\n" not in str(err.value), rel
    with pytest.raises(LinkError):
        open_new(root, "file.png", "w")
    with pytest.raises(LinkError):
        open_new(root, "folder/x.csv", "a")
    assert precious.read_text() == "precious" and sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert not (tmp_path / "missing").exists()
    os.symlink(root, tmp_path / "rootlink")
    with pytest.raises(LinkError, match="rootlink"):
        write_new(tmp_path / "rootlink", "x.png", b"PNG")


def test_relative_paths_only(tmp_path):
    for rel in ("../x", "/etc/x", "a/../../x", ""):
        with pytest.raises(ValueError):
            write_new(tmp_path, rel, b"x")


def test_open_new_truncates_or_appends_a_regular_file(tmp_path):
    with open_new(tmp_path, "t/results.csv", "w") as f:
        f.write("a\n")
    with open_new(tmp_path, "t/results.csv", "a") as f:
        f.write("b\n")
    assert (tmp_path / "t" / "results.csv").read_text() == "a\nb\n"
    with open_new(tmp_path, "t/results.csv", "w") as f:
        f.write("c\n")
    assert (tmp_path / "t" / "results.csv").read_text() == "c\n"
    os.mkfifo(tmp_path / "t" / "pipe.csv")
    with pytest.raises(NotRegularError, match="pipe.csv"):
        open_new(tmp_path, "t/pipe.csv", "a")  # never waits for a reader


def test_open_regular_refuses_fifos_devices_folders_and_loops_without_waiting(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"data")
    with open_regular(tmp_path / "f.bin") as f:
        assert f.read() == b"data"
    os.mkfifo(tmp_path / "pipe")
    os.symlink("loop", tmp_path / "loop")
    t0 = time.monotonic()
    for path, reason in ((tmp_path / "pipe", "pipe"), ("/dev/null", "device"), (tmp_path, "folder")):
        with pytest.raises(NotRegularError, match=reason):
            open_regular(path)
    with pytest.raises(OSError, match="symbolic link"):
        open_regular(tmp_path / "loop")
    assert time.monotonic() - t0 < 2
