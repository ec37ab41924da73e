"""Issue 22, what a hostile tester broke in the command line: each numbered item of the issue, reproduced.

7 `predict --overwrite` never writes through a link; 8 one line and a documented exit status for file-system
errors, linked --out folders, malformed weight manifests and unbounded numbers; 9 an endless batch window;
10 linked folders in the inputs, FIFOs, a 1 x 49,000,000 photo, empty manifests.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, textured
from winclip.cli import build_parser, main
from winclip.inspection.folder_run import read_records

TINY_MODEL = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]


@pytest.fixture
def photos(tmp_path, rng) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(textured(rng, 48, 64)).save(folder / f"{i:03d}.png")
    return folder


def predict_args(inputs: list[str], out: Path, *extra: str) -> list[str]:
    return ["predict", *inputs, "--object", "widget", "--out", str(out), *TINY_MODEL, "--no-progress", *extra]


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("winclip: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- 7. no write through a link ------------------------------------------------------------------------


def test_predict_overwrite_never_writes_through_a_link(tmp_path, photos, capsys):
    out = tmp_path / "sout"
    assert main(predict_args([str(photos)], out)) == 0
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    target = out / "overlays" / "000.png"
    target.unlink()
    os.symlink("../../precious.txt", target)
    capsys.readouterr()
    assert main(predict_args([str(photos)], out, "--overwrite")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "overlays/000.png" in line and "symbolic link" in line
    assert precious.read_text() == "precious" and target.is_symlink()
    # a linked folder inside --out: nothing is written into (or removed from) the folder it points to
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "001.png").write_text("theirs")
    target.unlink()
    os.rename(out / "masks", tmp_path / "masks-moved")
    os.symlink(outside, out / "masks")
    assert main(predict_args([str(photos)], out, "--overwrite")) == 2
    assert "masks" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in outside.iterdir()) == ["001.png"] and (outside / "001.png").read_text() == "theirs"
    # --resume writes only what is missing, and refuses a link planted where a picture goes
    (out / "masks").unlink()
    os.rename(tmp_path / "masks-moved", out / "masks")
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")  # the header and the first image
    (out / "overlays" / "001.png").unlink()
    os.symlink("../../precious.txt", out / "overlays" / "001.png")
    (out / "overlays" / "000.png").write_bytes(b"left by a killed run")
    assert main(predict_args([str(photos)], out, "--resume")) == 2
    assert "overlays/001.png" in one_error_line(capsys.readouterr().err)
    assert precious.read_text() == "precious"


def test_a_linked_out_folder_is_refused(tmp_path, photos, capsys):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    assert main(predict_args([str(photos)], tmp_path / "link")) == 2
    assert "symbolic link" in one_error_line(capsys.readouterr().err)
    assert list(real.iterdir()) == []


# -- 8. one line and a documented exit status ------------------------------------------------------------


def test_profile_create_over_a_linked_folder_is_refused_and_leaves_nothing(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    link = tmp_path / "link"
    os.symlink(real, link)
    args = ["profile", "create", "--object", "x", "--out", str(link), "--overwrite", *TINY_MODEL]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(link) in line and "symbolic link" in line
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert (real / "keep.txt").read_text() == "mine"


def full_disk(monkeypatch) -> None:
    """Every file winclip writes fails as on a full disk (os.write and file objects: ENOSPC)."""

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "the-file")

    monkeypatch.setattr(os, "write", enospc)
    monkeypatch.setattr("winclip.inspection.folder_run.write_new", enospc)


def test_a_full_disk_is_one_line_and_exit_3_in_every_command(tmp_path, photos, capsys, monkeypatch):
    full_disk(monkeypatch)
    out = tmp_path / "p.winclip"
    assert main(["profile", "create", "--object", "x", "--out", str(out), *TINY_MODEL]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left

    def export_enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "export" / "model.onnx"))

    monkeypatch.setattr("winclip.backbones.export.export_backbone", export_enospc)
    assert main(["export", "--format", "onnx", "--out", str(tmp_path / "export"), *TINY_MODEL]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "model.onnx" in line
    assert main(predict_args([str(photos)], tmp_path / "pred")) == 3
    assert "No space left on device" in one_error_line(capsys.readouterr().err)


def test_permission_errors_are_one_line_and_exit_3(tmp_path, photos, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["profile", "create", "--object", "x", "--out", str(locked / "p"), *TINY_MODEL]) == 3
        assert "Permission denied" in one_error_line(capsys.readouterr().err)
    finally:
        locked.chmod(0o700)


def manifest(folder: Path, content: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "winclip-weights.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def entry(files: object) -> dict:
    return {"backbone": "tiny-vit", "pretrained": "t", "files": files}


def test_weights_verify_refuses_malformed_manifests_in_one_line(tmp_path, capsys):
    (tmp_path / "w.bin").write_bytes(b"weights")
    sha = "a" * 64
    cases = {
        "no entries": {"format": "winclip-weights/1"},
        "entries a string": {"format": "winclip-weights/1", "entries": "abc"},
        "no files": {"format": "winclip-weights/1", "entries": [{"backbone": "x"}]},
        "files a dict": {"format": "winclip-weights/1", "entries": [entry({"path": "w.bin"})]},
        "no bytes": {"format": "winclip-weights/1", "entries": [entry([{"path": "w.bin", "sha256": sha}])]},
        "bytes a string": {"format": "winclip-weights/1",
                           "entries": [entry([{"path": "w.bin", "sha256": sha, "bytes": "7"}])]},
        "empty": {"format": "winclip-weights/1", "entries": []},
        "no file in the entry": {"format": "winclip-weights/1", "entries": [entry([])]},
        "parent path": {"format": "winclip-weights/1",
                        "entries": [entry([{"path": "../w.bin", "sha256": sha, "bytes": 7}])]},
        "absolute path": {"format": "winclip-weights/1",
                          "entries": [entry([{"path": "/etc/hostname", "sha256": sha, "bytes": 7}])]},
        "a link out": {"format": "winclip-weights/1",
                       "entries": [entry([{"path": "out.bin", "sha256": sha, "bytes": 7}])]},
        "a list": [],
        "not JSON": "{",
    }  # fmt: skip
    assert len(cases) == 13
    for i, (what, content) in enumerate(cases.items()):
        folder = manifest(tmp_path / f"m{i}", content)
        (folder / "w.bin").write_bytes(b"weights")
        os.symlink(tmp_path / "w.bin", folder / "out.bin")  # inside by name, outside by target
        status = main(["weights", "verify", str(folder)])
        captured = capsys.readouterr()
        assert status in (1, 2), what
        line = one_error_line(captured.err)
        assert str(folder) in line, (what, line)


# -- 8, 9. numbers: finite, with named bounds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--memory-budget-mb", "inf"), ("--keep-max-gb", "inf"), ("--max-upload-mb", "nan"),
     ("--batch-window-ms", "inf"), ("--batch-window-ms", "1e300"), ("--max-upload-mb", "1e300"),
     ("--max-megapixels", "1e300"), ("--memory-budget-mb", "1e300"), ("--db-timeout", "1e300"),
     ("--sync-interval", "1e300"), ("--keep-max-gb", "1e300"), ("--max-batch", "1000000000"),
     ("--max-images", "1000000000"), ("--batch-size", "1000000000"), ("--min-area", "-1"),
     ("--threads", "100000")],
)  # fmt: skip
def test_serve_numbers_are_finite_and_bounded_and_name_the_option(tmp_path, option, value, capsys):
    """Checked when the request is built (what `serve` does first: exit 2 with the line); nothing is served."""
    from winclip.cli.requests import ServeRequest

    args = ["serve", "--profiles", str(tmp_path / "p"), option, value]
    if option == "--keep-max-gb":
        args += ["--keep", "anomalous"]
    try:
        ServeRequest.of(build_parser().parse_args(args))
    except SystemExit as done:  # argparse: "argument --option: ..."
        assert done.code == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
    except ValueError as exc:
        message = str(exc)
    else:
        pytest.fail(f"{option} {value} accepted")
    assert option in message and "\n" not in message.strip(), message


@pytest.mark.parametrize(
    "args",
    [["predict", "x.png", "--object", "o", "--out", "o", "--threshold", "nan"],
     ["predict", "x.png", "--object", "o", "--out", "o", "--threshold", "1.5"],
     ["predict", "x.png", "--object", "o", "--out", "o", "--review-threshold=-inf"],
     ["predict", "x.png", "--object", "o", "--out", "o", "--max-megapixels", "inf"],
     ["predict", "x.png", "--object", "o", "--out", "o", "--min-area", "-5"],
     ["predict", "x.png", "--object", "o", "--out", "o", "--ray", "auto", "--ray-cpus-per-worker", "nan"],
     ["profile", "create", "--object", "o", "--out", "o", "--threshold", "inf"],
     ["profile", "calibrate", "p", "--good", "g.png", "--target-fpr", "nan"],
     ["profile", "calibrate", "p", "--good", "g.png", "--review-fpr", "2"],
     ["eval", "--dataset", "mvtec", "--root", "r", "--temperature", "nan"],
     ["eval", "--dataset", "mvtec", "--root", "r", "--tile-overlap", "inf"],
     ["eval", "--dataset", "mvtec", "--root", "r", "--seeds", "-1"],
     ["report", "r", "--gallery", "-3"],
     ["watch", "in", "--profile", "p", "--out", "o", "--settle-seconds", "1e300"],
     ["watch", "in", "--profile", "p", "--out", "o", "--sync-interval", "inf"],
     ["watch", "in", "--profile", "p", "--out", "o", "--max-megapixels", "nan"],
     ["watch", "in", "--profile", "p", "--out", "o", "--queue", "-1"],
     ["watch", "in", "--profile", "p", "--out", "o", "--threads", "100000"]],
)  # fmt: skip
def test_every_float_option_is_finite_and_bounded_at_the_edge(args, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    option = next(a for a in args[::-1] if a.startswith("--")).split("=")[0]
    assert f"argument {option}:" in err, err


# -- 10. inputs: linked folders, FIFOs, a 1 x 49,000,000 photo ---------------------------------------------


def test_a_linked_folder_in_an_input_is_followed_and_a_loop_is_an_error_row(tmp_path, photos, capsys):
    src = tmp_path / "src"
    (src / "own").mkdir(parents=True)
    Image.fromarray(textured(np.random.default_rng(3), 48, 64)).save(src / "own" / "a.png")
    os.symlink(photos, src / "linked")  # a folder kept elsewhere
    os.symlink("..", src / "own" / "up")  # a loop back to src
    out = tmp_path / "out"
    assert main(predict_args([str(src)], out)) == 1  # the loop is a failure row
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(Path(r["path"]).relative_to(src).as_posix() for r in rows) == [
        "linked/000.png", "linked/001.png", "linked/002.png", "own/a.png"]  # fmt: skip
    assert (out / "overlays" / "linked" / "000.png").is_file()
    errors = list(csv.DictReader((out / "errors.csv").open()))
    assert [Path(e["path"]).relative_to(src).as_posix() for e in errors] == ["own/up"]
    assert "symbolic link loop" in errors[0]["reason"]
    assert len(read_records(out / "results.jsonl")[1]) == 4


def test_a_fifo_among_the_inputs_is_an_error_row_and_never_opened(tmp_path, photos, capsys):
    os.mkfifo(photos / "pipe.png")
    t0 = time.monotonic()
    assert main(predict_args([str(photos)], tmp_path / "out")) == 1
    assert time.monotonic() - t0 < 60
    errors = list(csv.DictReader((tmp_path / "out" / "errors.csv").open()))
    assert [(Path(e["path"]).name, e["reason"]) for e in errors] == [
        ("pipe.png", "is not a regular file (a pipe, socket or device)")]  # fmt: skip


def test_a_one_pixel_high_photo_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    from winclip.images import ImageError, load_image

    path = tmp_path / "line.png"
    Image.new("L", (49_000_000, 1)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    decoded = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real(self))
    with pytest.raises(ImageError, match="smaller than the minimum 8"):
        load_image(path, "line.png", 8, max_pixels=50_000_000)
    assert (49_000_000, 1) not in decoded
