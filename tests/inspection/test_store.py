"""Issue 11, profiles on disk: `load` refuses inconsistent, non-finite or out-of-range content with one
line; `save` swaps a whole folder in atomically (a kill at any point leaves the old or the new profile),
keeps what else the folder holds, and gives every file the same mode."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import make_model, textured
from winclip.inspection.inspector import Inspector
from winclip.inspection.profile import Profile
from winclip.inspection.store import profile_files, temp_folders, write_folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("store") / "p"
    roi = np.zeros((64, 64), np.uint8)
    roi[:, 10:] = 1
    Profile.create(make_model(), "screw", [textured(rng, 64, 64) for _ in range(2)], roi=roi).save(folder)
    return folder


def broken(saved: Path, tmp_path: Path, edit_meta=None, edit_tensors=None) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(saved, folder)
    if edit_meta is not None:
        meta = json.loads((folder / "profile.json").read_text())
        edit_meta(meta)
        (folder / "profile.json").write_text(json.dumps(meta))
    if edit_tensors is not None:
        tensors = load_file(str(folder / "tensors.safetensors"))
        edit_tensors(tensors)
        save_file(tensors, str(folder / "tensors.safetensors"))
    return folder


def setitem(key: str, value):
    def edit(d: dict) -> None:
        *path, last = key.split(".")
        for k in path:
            d = d[k]
        d[last] = value

    return edit


CASES = [
    ("one reference listed, two encoded", lambda m: m.__setitem__("references", m["references"][:1]), None,
     "tensor reference.image has shape 2x32, expected 1x32"),
    ("views disagree", lambda m: m["references"][0].__setitem__("views", 2), None,
     "tensor reference.image has shape 2x32, expected 3x32"),
    ("references not a list", setitem("references", None), None, "references must be a list"),
    ("window tensor of the wrong shape", None, lambda t: t.__setitem__("reference.windows.2", torch.zeros(2, 36, 32)),
     "tensor reference.windows.2 has shape 2x36x32, expected 2x49x32"),
    ("a window scale missing", None, lambda t: t.pop("reference.windows.3"), "tensor reference.windows.3 is missing"),
    ("a tensor nobody asked for", None, lambda t: t.__setitem__("extra", torch.zeros(1)), "unexpected tensor extra"),
    ("NaN prototype", None, lambda t: t["prototype.normal"].__setitem__(0, float("nan")),
     "tensor prototype.normal holds NaN or infinite values"),
    ("prototypes of two sizes", None, lambda t: t.__setitem__("prototype.anomalous", torch.ones(16)),
     "tensor prototype.anomalous has shape 16, expected 32"),
    ("embedding size of the references", None, lambda t: t.__setitem__("reference.image", torch.ones(2, 16)),
     "tensor reference.image has shape 2x16, expected 2x32"),
    ("infinite patches", None, lambda t: t["reference.patches"].__setitem__((0, 0, 0), float("inf")),
     "tensor reference.patches holds NaN or infinite values"),
    ("threshold NaN", setitem("threshold", float("nan")), None, "threshold must be in (0, 1], got nan"),
    ("threshold 0", setitem("threshold", 0), None, "threshold must be in (0, 1], got 0"),
    ("threshold 5", setitem("threshold", 5), None, "threshold must be in (0, 1], got 5"),
    ("review above the threshold", lambda m: m.update(threshold=0.4, review_threshold=0.6), None,
     "review threshold must be in [0, threshold 0.4] or null, got 0.6"),
    ("confidence scale 0", setitem("confidence_scale", 0), None, "confidence scale must be a finite number > 0"),
    ("std 0", setitem("preprocess.std", [0.2, 0, 0.2]), None, "preprocess.std must be 3 positive numbers"),
    ("sha256 not hex", lambda m: m["references"][0].__setitem__("sha256", "zz"), None, "references[0].sha256 must be"),
    ("ROI size", setitem("roi.width", 32), None, "roi.png is not 32x64 as recorded"),
    ("no prompts", setitem("prompts.templates", []), None, "prompts.templates must be a non-empty list of strings"),
    ("window scale without its tensor", setitem("options.scales", [2, 9]), None,
     "tensor reference.windows.9 is missing"),
    ("window larger than the grid", setitem("options.scales", [2, 9]),
     lambda t: t.update({"reference.windows.9": t.pop("reference.windows.3")[:, :1].clone()}),
     "window scale 9 does not fit the 8x8 patch grid"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "meta", "tensors", "message"), CASES, ids=[c[0] for c in CASES])
def test_load_refuses_inconsistent_content_with_one_line(saved, tmp_path, what, meta, tensors, message):
    folder = broken(saved, tmp_path, meta, tensors)
    with pytest.raises(ValueError) as err:
        Profile.load(folder)
    text = str(err.value)
    assert text.startswith(f"{folder}: malformed profile (") and message in text and "\n" not in text, text


def test_a_valid_profile_still_loads_and_scores(saved):
    assert len(CASES) == 21
    loaded = Profile.load(saved)
    (r,) = Inspector(loaded, make_model()).inspect([textured(np.random.default_rng(1), 64, 64)])
    assert np.isfinite(r.score) and loaded.shots == 2


def test_save_replaces_the_whole_folder_keeps_other_entries_and_one_file_mode(saved, tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(saved, folder)
    (folder / "references").mkdir()
    (folder / "references" / "000.png").write_bytes(b"photo")
    profile = Profile.load(folder)
    inode = (folder / "tensors.safetensors").stat().st_ino
    moved = profile.with_thresholds(0.7, review=0.6)
    moved.save(folder, overwrite=True)
    assert Profile.load(folder).digest() == moved.digest()
    assert (folder / "references" / "000.png").read_bytes() == b"photo"  # the service's photos survive
    assert (folder / "tensors.safetensors").stat().st_ino != inode  # a new file, not rewritten in place
    assert temp_folders(folder) == []
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}
    assert modes == dict.fromkeys(("profile.json", "tensors.safetensors", "roi.png"), 0o666 & ~umask)
    (folder / "roi.png").unlink()
    Profile.load(saved).save(tmp_path / "fresh")
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o777 & ~umask


def test_a_stale_temp_folder_is_ignored_by_load_and_removed_by_save(saved, tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(saved, folder)
    stale = tmp_path / ".p.tmp-0123abcd"
    stale.mkdir()
    (stale / "profile.json").write_text("{half")
    assert Profile.load(folder).digest() == Profile.load(saved).digest()
    assert temp_folders(folder) == [stale]
    Profile.load(folder).save(folder, overwrite=True)
    assert not stale.exists()


SAVE_CALLS = ("open", "write", "fsync", "mkdir", "rename", "link", "symlink", "unlink", "rmdir")


def test_a_kill_at_any_point_of_a_save_leaves_the_old_or_the_new_profile(saved, tmp_path):
    """Fork, kill the child (os._exit) at its n-th file-system call of the save, for every n."""
    import winclip.inspection.store as store

    pristine = tmp_path / "pristine"
    shutil.copytree(saved, pristine)
    (pristine / "references").mkdir()
    (pristine / "references" / "a.png").write_bytes(b"a")
    folder = tmp_path / "p"
    old = Profile.load(pristine)
    new = old.with_thresholds(0.9, review=0.1)
    meta, tensors, roi = new.to_json(), new.tensors(), new.roi
    profile_files(meta, tensors, roi)  # warm safetensors in the parent
    digests, n = set(), 0
    while True:
        n += 1
        for leftover in [folder, *temp_folders(folder)]:  # the same start every time: call n is the same call
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(pristine, folder)
        pid = os.fork()
        if pid == 0:  # the child: count the calls, die at the n-th; it never returns into pytest
            code = 1
            try:
                count = [0]

                def counted(fn, kill_at=n, count=count):
                    def call(*args, **kwargs):
                        count[0] += 1
                        if count[0] == kill_at:
                            os._exit(9)
                        return fn(*args, **kwargs)

                    return call

                for name in SAVE_CALLS:
                    setattr(os, name, counted(getattr(os, name)))
                store._exchange = counted(store._exchange)
                write_folder(folder, meta, tensors, roi, overwrite=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        loaded = Profile.load(folder)  # the stale temp folder a kill leaves is ignored
        digests.add(loaded.digest())
        assert loaded.digest() in (old.digest(), new.digest()), f"mixed state after a kill at call {n}"
        assert (folder / "references" / "a.png").read_bytes() == b"a"
        assert os.WEXITSTATUS(status) in (0, 9), f"the save failed in the child at call {n}"
        if os.WEXITSTATUS(status) == 0:
            break
        assert n < 500
    assert n > 10 and digests == {old.digest(), new.digest()}


# -- issue 22: FIFOs, devices and link loops in a profile folder ---------------------------------------


def test_a_fifo_device_or_link_loop_in_a_profile_is_refused_at_once_in_one_line(saved, tmp_path):
    cases = {}
    for name in ("fifo_roi", "loop_json", "device_tensors", "fifo_json"):
        folder = tmp_path / name
        shutil.copytree(saved, folder)
        cases[name] = folder
    (cases["fifo_roi"] / "roi.png").unlink()
    os.mkfifo(cases["fifo_roi"] / "roi.png")
    (cases["loop_json"] / "profile.json").unlink()
    os.symlink("profile.json", cases["loop_json"] / "profile.json")
    (cases["device_tensors"] / "tensors.safetensors").unlink()
    os.symlink("/dev/zero", cases["device_tensors"] / "tensors.safetensors")
    (cases["fifo_json"] / "profile.json").unlink()
    os.mkfifo(cases["fifo_json"] / "profile.json")
    expected = {
        "fifo_roi": "roi.png: a pipe, not a regular file",
        "loop_json": "profile.json: symbolic link loop",
        "device_tensors": "tensors.safetensors: a device, not a regular file",
        "fifo_json": "profile.json: a pipe, not a regular file",
    }
    for name, folder in cases.items():
        released = threading.Event()
        threading.Thread(target=_release_fifos, args=(folder, released), daemon=True).start()
        t0 = time.monotonic()
        try:
            with pytest.raises(ValueError) as err:
                Profile.load(folder)
        finally:
            released.set()
        assert time.monotonic() - t0 < 3, f"{name}: waited on the file"
        text = str(err.value)
        assert expected[name] in text and "\n" not in text, (name, text)


def _release_fifos(folder: Path, done: threading.Event) -> None:
    """Open the folder's FIFOs for writing every 5 s, so a reader blocked on one (the bug) comes back."""
    while not done.wait(5):
        for path in folder.iterdir():
            if stat.S_ISFIFO(path.lstat().st_mode):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
