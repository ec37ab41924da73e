"""`winclip profile ...`: a profile made from a model-config file works without it; files checked before any model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, textured, without_torch
from winclip.cli import main
from winclip.inspection.profile import Profile

CPU = ["--pretrained", "none", "--device", "cpu"]


@pytest.fixture
def photos(tmp_path, rng) -> dict[str, list[str]]:
    out = {}
    for kind, n in (("refs", 2), ("holdout", 3), ("new", 2)):
        (tmp_path / kind).mkdir()
        out[kind] = []
        for i in range(n):
            path = tmp_path / kind / f"{i}.png"
            Image.fromarray(textured(rng, 48, 64)).save(path)
            out[kind].append(str(path))
    return out


def test_a_profile_made_from_a_model_config_file_needs_neither_the_file_nor_backbone_again(
    tmp_path, photos, monkeypatch, capsys
):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "bracket-vit.json"  # a name open_clip does not know
    shutil.copy(TINY, config)
    prof = tmp_path / "bracket.winclip"
    create = ["profile", "create", "--object", "bracket", "--good", *photos["refs"], "--out", str(prof)]
    assert main([*create, "--backbone", str(config), *CPU]) == 0
    meta = json.loads((prof / "profile.json").read_text())
    assert meta["backbone"] == "bracket-vit" and meta["model_config"] == json.loads(Path(TINY).read_text())
    config.unlink()  # gone: the profile carries the config's content
    env = {**os.environ, "WINCLIP_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    calibrate = [sys.executable, "-m", "winclip", "profile", "calibrate", str(prof), "--good", *photos["holdout"]]
    done = subprocess.run(
        [*calibrate, "--target-fpr", "0.5", "--device", "cpu"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr  # a fresh process: nothing registered bracket-vit before
    assert "threshold " in done.stdout and Profile.load(prof).calibration is not None
    (stored,) = (tmp_path / "cache" / "model-configs").glob("*/bracket-vit.json")
    assert json.loads(stored.read_text()) == meta["model_config"]
    capsys.readouterr()
    assert main(["profile", "add-good", str(prof), photos["new"][0], "--device", "cpu"]) == 0
    assert Profile.load(prof).shots == 3
    out = tmp_path / "out"
    assert main(["predict", photos["new"][1], "--profile", str(prof), "--out", str(out), "--device", "cpu"]) == 0
    assert "bracket-vit" in capsys.readouterr().err
    other = json.loads(Path(TINY).read_text())
    other["vision_cfg"]["layers"] = 1  # another architecture under the same name
    config.write_text(json.dumps(other))
    assert main(["profile", "add-good", str(prof), photos["new"][0], "--backbone", str(config), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "winclip: error: the profile's model config of bracket-vit differs from the one loaded; leave --backbone "
        "out to use the profile's own"
    )


def test_files_are_checked_before_torch_is_imported(tmp_path, photos):
    prof = tmp_path / "p.winclip"
    assert main(["profile", "create", "--object", "bracket", "--out", str(prof), "--backbone", TINY, *CPU]) == 0
    missing = str(tmp_path / "missing.png")
    started = time.perf_counter()
    without_torch("profile", "add-good", str(prof), photos["new"][0], missing, status=2)
    elapsed = time.perf_counter() - started  # a fresh interpreter: about its start-up, not seconds of model loading
    without_torch("profile", "calibrate", str(prof), "--good", *photos["holdout"], "--bad", missing, status=2)
    without_torch("profile", "create", "--object", "x", "--good", missing, "--out", str(tmp_path / "q"), status=2)
    (tmp_path / "notes.png").write_text("not an image")
    without_torch("profile", "add-good", str(prof), str(tmp_path / "notes.png"), status=2)
    without_torch("profile", "add-good", str(tmp_path / "no-profile"), photos["new"][0], status=2)
    assert elapsed < 5, elapsed
    for argv, line in (
        (["profile", "add-good", str(prof), missing], f"add-good {missing}: file not found"),
        (["profile", "add-good", str(prof), str(tmp_path / "notes.png")], "not an image file (format not recognised)"),
        (["profile", "create", "--object", "x", "--out", str(tmp_path / "q"), "--roi", missing], f"--roi {missing}"),
        (["profile", "add-good", str(tmp_path / "no-profile"), photos["new"][0]], "not a winclip profile"),
    ):
        run = subprocess.run([sys.executable, "-m", "winclip", *argv], capture_output=True, text=True)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and line in run.stderr, run.stderr


def test_winclips_own_pictures_are_refused_as_good_photos(tmp_path, photos, capsys):
    prof = tmp_path / "p.winclip"
    assert main(["profile", "create", "--object", "bracket", "--out", str(prof), "--backbone", TINY, *CPU]) == 0
    out = tmp_path / "results"
    assert main(["predict", *photos["new"], "--profile", str(prof), "--out", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    pictures = {kind: str(out / f"{kind}s" / "0.png") for kind in ("overlay", "mask", "composite")}
    for kind, path in pictures.items():
        assert main(["profile", "add-good", str(prof), path]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"winclip: error: add-good {path}: a {kind} winclip wrote, not a photo; give the original photo (its path "
            "is in results.csv)\n"
        )
    without_torch("profile", "add-good", str(prof), pictures["overlay"], status=2)
    assert main(["profile", "calibrate", str(prof), "--good", pictures["mask"]]) == 2
    assert (
        main(["profile", "create", "--object", "x", "--good", str(out / "composites"), "--out", str(tmp_path / "q")])
        == 2
    )
    assert "a composite winclip wrote" in capsys.readouterr().err
    assert Profile.load(prof).shots == 0  # nothing was added
    assert (
        main(["profile", "add-good", str(prof), photos["new"][0], "--device", "cpu"]) == 0
    )  # the photo itself is fine


def test_calibrate_says_when_too_few_good_photos_cannot_support_the_rate(tmp_path, photos, capsys):
    prof = tmp_path / "p.winclip"
    assert main(["profile", "create", "--object", "bracket", "--out", str(prof), "--backbone", TINY, *CPU]) == 0
    capsys.readouterr()
    assert main(["profile", "calibrate", str(prof), "--good", *photos["holdout"], "--target-fpr", "0.01"]) == 0
    out, err = capsys.readouterr()
    cal = Profile.load(prof).calibration
    scores = sorted(c.score for c in cal.good)
    assert cal.threshold == pytest.approx(float(np.quantile(scores, 0.99)))  # numpy's quantile, as before
    note = (
        "3 good images cannot support a false-alarm rate of 1.00% (that needs at least 100): the threshold "
        f"{cal.threshold:.6f} is numpy's quantile at 0.99, interpolated between the highest good scores, and 1 of the "
        "3 score at or above it; add held-out good images"
    )
    assert cal.note == note and f"warning: {note}" in out and err.endswith(f"winclip: warning: {note}\n")
    assert main(["profile", "calibrate", str(prof), "--good", *photos["holdout"], "--target-fpr", "0.4"]) == 0
    assert Profile.load(prof).calibration.note == "" and "warning" not in capsys.readouterr().out  # 3 x 0.4 >= 1
    (tmp_path / "garbage.png").write_bytes(b"not a photo")  # a held-out photo that cannot be read: skipped, reported
    good = [*photos["holdout"], str(tmp_path / "garbage.png")]
    assert main(["profile", "calibrate", str(prof), "--good", *good, "--target-fpr", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "calibration: 3 good, 0 bad, 1 skipped" in out and f"skipped good image {tmp_path / 'garbage.png'}" in out


def test_predict_writes_a_readable_composite_per_photo_and_notes_a_label_without_regions(tmp_path, capsys):
    examples = Path(__file__).resolve().parents[2] / "examples"
    photo, good = str(examples / "scratched_plate.png"), str(examples / "good_plate.png")
    out = tmp_path / "r"
    base = ["predict", photo, good, "--object", "metal plate", "--good", good, "--out", str(out), "--save-maps"]
    assert main([*base, "--backbone", TINY, *CPU]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 and all(r["composite"] == f"composites/{Path(r['path']).stem}.png" for r in rows)
    for row in rows:
        with Image.open(out / row["composite"]) as picture:
            assert picture.width >= 2 * picture.height and picture.info["winclip-output"] == "composite"
            assert picture.height >= 256  # the 256x256 photo at a readable size
        for kind in ("overlay", "mask"):
            with Image.open(out / row[kind]) as image:
                assert image.info["winclip-output"] == kind and image.size == (256, 256)  # the machine's pictures
    # a threshold between the map's peak and the image score: labelled anomalous with no region, and it says why
    row = rows[0]
    with Image.open(out / row["map"]) as tiff:
        peak, score = float(np.asarray(tiff).max()), float(row["score"])
    assert peak < score, (peak, score)  # the image-level evidence beyond the pixel-level one (seeded weights)
    t = (peak + score) / 2
    assert main([*base, "--backbone", TINY, *CPU, "--threshold", f"{t:.6f}", "--overwrite"]) == 0
    noted = next(r for r in csv.DictReader((out / "results.csv").open()) if r["path"] == photo)
    assert noted["label"] == "anomalous" and noted["n_regions"] == "0"
    assert noted["note"] == (
        f"no region above the threshold: the image score reaches it, the map's peak ({peak:.4f}) does not"
    )
    assert json.loads((out / "results.jsonl").read_text().splitlines()[1])["note"] == noted["note"]
