"""`winclip profile ...` and `winclip predict` end to end on the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, textured
from winclip.cli import main
from winclip.profile import Profile
from winclip.workflow import read_records

TINY_MODEL = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]


@pytest.fixture
def photos(tmp_path, rng) -> dict[str, Path]:
    folders = {}
    for name, n in (("refs", 2), ("holdout", 5), ("bad", 2), ("new", 3)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i in range(n):
            img = textured(rng, 48, 64)
            if name == "bad":
                img[5:25, 5:25] = (255, 0, 255)
            Image.fromarray(img).save(folders[name] / f"{i}.png")
    return folders


def test_profile_create_calibrate_add_good_show_then_predict(tmp_path, photos, capsys):
    prof = tmp_path / "widget.winclip"
    refs = str(photos["refs"] / "*.png")
    assert main(["profile", "create", "--object", "widget", "--good", refs, "--out", str(prof),
                 "--anomalous-state", "{o} with a purple stain", *TINY_MODEL]) == 0  # fmt: skip
    assert "references: 2 image(s)" in capsys.readouterr().out
    assert main(["profile", "create", "--object", "widget", "--out", str(prof), *TINY_MODEL]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["profile", "calibrate", str(prof), "--good", str(photos["holdout"]), "--bad", str(photos["bad"]),
                 "--target-fpr", "0.2", "--review-fpr", "0.6", "--backbone", TINY]) == 0  # fmt: skip
    report = capsys.readouterr().out
    calibrated = Profile.load(prof)
    assert f"threshold {calibrated.threshold:.6f} = quantile(good, 1 - 0.2)" in report and "<-- threshold" in report
    assert calibrated.calibration is not None and len(calibrated.calibration.good) == 5
    edited = photos["holdout"] / "4.png"
    Image.fromarray(textured(np.random.default_rng(7), 48, 64)).save(edited)  # changed since calibration
    assert main(["profile", "add-good", str(prof), str(photos["holdout"] / "0.png"), "--backbone", TINY]) == 0
    warning = "warning: 1 calibration image(s) changed on disk since calibration and are re-scored as they are now"
    assert f"{warning}: {edited.resolve()}\n" in capsys.readouterr().err
    grown = Profile.load(prof)
    assert grown.shots == 3 and grown.reference_names[-1] == str(photos["holdout"] / "0.png")
    assert grown.calibration.good[0].score < calibrated.calibration.good[0].score
    capsys.readouterr()
    assert main(["profile", "show", str(prof)]) == 0
    shown = capsys.readouterr().out
    assert "{o} with a purple stain" not in shown and "5 anomalous states" in shown and grown.digest() in shown

    out = tmp_path / "results"
    stained = tmp_path / "stained.png"
    stained.write_bytes((photos["bad"] / "0.png").read_bytes())
    assert main(["predict", str(photos["new"]), str(stained), "--profile", str(prof), "--out", str(out),
                 "--backbone", TINY, "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"profile {prof} (calibrated)" in err and "4 images:" in err and "0 failed" in err
    header, records = read_records(out / "results.jsonl")
    assert header["profile_digest"] == grown.digest() and header["winclip_version"]
    assert len(records) == 4 and all(r["threshold"] == grown.threshold for r in records)
    assert all(r["label"] in ("normal", "review", "anomalous") for r in records)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["0.png", "1.png", "2.png", "stained.png"]


def test_predict_without_a_profile_says_the_threshold_is_a_default(tmp_path, photos, capsys):
    out = tmp_path / "out"
    (photos["new"] / "broken.png").write_bytes(b"garbage")
    code = main(["predict", str(photos["new"]), "--object", "bottle", "--good", str(photos["refs"]), "--out", str(out),
                 "--save-maps", "--min-area", "5", *TINY_MODEL])  # fmt: skip
    assert code == 1  # one photo failed, the others were written
    err = capsys.readouterr().err
    assert "RANDOM WEIGHTS" in err and "threshold 0.5 is a default, not calibrated" in err
    assert "on cpu, fp32, batch 8" in err and f"winclip: {photos['new'] / 'broken.png'}: not an image file" in err
    header, records = read_records(out / "results.jsonl")
    assert header["profile"] is None and header["shots"] == 2 and header["min_area"] == 5
    assert len(records) == 3  # --min-area reaches the run (header); its filtering is tested in test_profile
    assert all(Image.open(out / r["map"]).mode == "F" for r in records)
    assert main(["predict", str(photos["new"]), "--object", "bottle", "--out", str(out), *TINY_MODEL]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(photos["new"]), "--object", "bottle", "--out", str(out), "--resume", "--save-maps",
                 "--min-area", "5", "--good", str(photos["refs"]), *TINY_MODEL]) == 1  # fmt: skip
    assert "3 resumed" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, photos, capsys):
    assert (
        main(["predict", str(tmp_path / "none*.png"), "--object", "x", "--out", str(tmp_path / "o"), *TINY_MODEL]) == 2
    )
    assert "no images found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["predict", str(photos["new"]), "--out", str(tmp_path / "o")])  # neither --profile nor --object
    assert done.value.code == 2
    assert (
        main(["predict", str(photos["new"]), "--profile", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "not a winclip profile" in capsys.readouterr().err


def test_a_profile_from_another_checkpoint_is_refused_by_predict(tmp_path, photos, capsys):
    prof = tmp_path / "p"
    assert main(["profile", "create", "--object", "widget", "--out", str(prof), *TINY_MODEL]) == 0
    meta = json.loads((prof / "profile.json").read_text())
    meta["weights_id"] = "sha256:" + "0" * 64
    (prof / "profile.json").write_text(json.dumps(meta))
    capsys.readouterr()
    code = main(["predict", str(photos["new"]), "--profile", str(prof), "--out", str(tmp_path / "o"), *TINY_MODEL])
    assert code == 2
    err = capsys.readouterr().err
    assert "made with tiny-vit (sha256:0000" in err and "loaded model is tiny-vit (random:seed=0)" in err
    assert not (tmp_path / "o").exists()


def test_roi_via_the_command_line(tmp_path, photos):
    roi = np.zeros((48, 64), np.uint8)
    roi[:, 32:] = 255
    Image.fromarray(roi).save(tmp_path / "roi.png")
    out = tmp_path / "out"
    assert main(["predict", str(photos["bad"]), "--object", "widget", "--roi", str(tmp_path / "roi.png"),
                 "--threshold", "0.01", "--out", str(out), *TINY_MODEL, "--no-progress"]) == 0  # fmt: skip
    _, records = read_records(out / "results.jsonl")
    assert len(records) == 2
    for r in records:
        mask = np.asarray(Image.open(out / r["mask"]))
        assert not mask[:, :32].any() and mask[:, 32:].all()
        assert all(g["x"] >= 32 for g in r["regions"]) and r["score"] <= r["model_score"]
