"""`winclip profile ...` and `winclip predict` end to end on the tiny random model."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from helpers import TINY, make_model, textured
from winclip.cli import build_parser, main
from winclip.cli.requests import PredictRequest
from winclip.inspection.folder_run import read_records
from winclip.inspection.profile import Profile

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
    assert "references: 2 images" in capsys.readouterr().out
    assert main(["profile", "create", "--object", "widget", "--out", str(prof), *TINY_MODEL]) == 2
    assert "already exists" in capsys.readouterr().err
    # (the precision check calibrate runs by default is tested in tests/cli/test_precision.py)
    assert main(["profile", "calibrate", str(prof), "--good", str(photos["holdout"]), "--bad", str(photos["bad"]),
                 "--target-fpr", "0.2", "--review-fpr", "0.6", "--backbone", TINY,
                 "--no-precision-check"]) == 0  # fmt: skip
    report = capsys.readouterr().out
    calibrated = Profile.load(prof)
    assert f"threshold {calibrated.threshold:.6f} = quantile(good, 1 - 0.2)" in report and "<-- threshold" in report
    assert calibrated.calibration is not None and len(calibrated.calibration.good) == 5
    edited = photos["holdout"] / "4.png"
    Image.fromarray(textured(np.random.default_rng(7), 48, 64)).save(edited)  # changed since calibration
    assert main(["profile", "add-good", str(prof), str(photos["holdout"] / "0.png"), "--backbone", TINY]) == 0
    warning = "warning: 1 calibration image changed on disk since calibration; re-scored as found now"
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


# -- issue 11: outputs, bad entries, limits, unwritable folders ----------------------------------


def predict_args(inputs: list[str], out: Path, *extra: str) -> list[str]:
    return ["predict", *inputs, "--object", "widget", "--out", str(out), *TINY_MODEL, "--no-progress", *extra]


def test_overwrite_removes_only_what_winclip_wrote(tmp_path, photos, capsys):
    out = tmp_path / "out"
    assert main(predict_args([str(photos["new"])], out)) == 0
    mine = [out / "overlays" / "notes.txt", out / "masks" / "keep" / "user.png", out / "user.csv"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user data")
    written = (out / ".winclip-written").read_text().splitlines()
    assert "overlays/0.png" in written and "results.csv" in written
    assert main(predict_args([str(photos["new"] / "0.png")], out, "--overwrite")) == 0
    assert all(p.read_text() == "user data" for p in mine)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["0.png", "notes.txt"]  # 1.png, 2.png removed
    assert len(read_records(out / "results.jsonl")[1]) == 1
    # an output folder from before the manifest: the files its results.jsonl names are removed, nothing else
    (out / ".winclip-written").unlink()
    assert main(predict_args([str(photos["new"] / "1.png")], out, "--overwrite")) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["1.png", "notes.txt"]
    assert all(p.read_text() == "user data" for p in mine)


def test_out_inside_an_input_folder_is_refused(tmp_path, photos, capsys):
    for out in (photos["new"] / "results", photos["new"]):
        assert main(predict_args([str(photos["new"])], out)) == 2
        assert "is inside the input folder" in capsys.readouterr().err
        assert not (photos["new"] / "results").exists()
    assert main(predict_args([str(photos["new"].parent / "**" / "*.png")], photos["new"] / "o")) == 2
    assert "is inside the input folder" in capsys.readouterr().err


def test_resume_matches_inputs_by_resolved_path(tmp_path, photos, capsys, monkeypatch):
    monkeypatch.chdir(photos["new"].parent)
    out = tmp_path / "out"
    assert main(predict_args(["new"], out)) == 0
    assert main(predict_args([str(photos["new"].resolve()), "./new/0.png"], out, "--resume")) == 0
    assert "3 resumed" in capsys.readouterr().err
    assert len(read_records(out / "results.jsonl")[1]) == 3  # no row twice
    monkeypatch.chdir(tmp_path)  # relative paths of the first run are taken from its own folder
    assert main(predict_args([str(photos["new"])], out, "--resume")) == 0
    assert "3 resumed" in capsys.readouterr().err and len(read_records(out / "results.jsonl")[1]) == 3


def test_folders_named_like_images_and_bad_links_are_error_rows(tmp_path, photos, capsys):
    src = tmp_path / "in"
    shutil.copytree(photos["new"], src)
    (src / "x.png").mkdir()
    (src / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (src / "loop.png").symlink_to("loop.png")
    os.mkfifo(src / "pipe.png")
    code = main(predict_args([str(src), str(src / "loop.png")], tmp_path / "out"))
    assert code == 1
    errors = {Path(r["path"]).name: r["reason"] for r in csv.DictReader((tmp_path / "out" / "errors.csv").open())}
    assert errors == {
        "x.png": "is a directory, not an image file",
        "broken.png": f"broken symbolic link (to {str(tmp_path / 'nowhere.png')!r})",
        "loop.png": "symbolic link loop",
        "pipe.png": "is not a regular file (a pipe, socket or device)",
    }
    assert len(read_records(tmp_path / "out" / "results.jsonl")[1]) == 3
    assert "4 failed" in capsys.readouterr().err


def test_a_pixel_bomb_is_an_error_row_without_decoding(tmp_path, photos, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("L", (12000, 12000)).save(src / "bomb.png", optimize=True)
    shutil.copy(photos["new"] / "0.png", src / "ok.png")
    assert (src / "bomb.png").stat().st_size < 200_000
    decoded, load = [], ImageFile.ImageFile.load  # every pixel decode of a file goes through ImageFile.load

    def counting_load(image):
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    code = main(predict_args([str(src)], tmp_path / "out", "--max-megapixels", "100"))
    assert code == 1 and (64, 48) in decoded and (12000, 12000) not in decoded  # read from the header only
    errors = list(csv.DictReader((tmp_path / "out" / "errors.csv").open()))
    assert [(Path(e["path"]).name, e["reason"]) for e in errors] == [
        ("bomb.png", "image is 12000x12000 pixels, more than the limit of 100,000,000 pixels")
    ]
    assert len(read_records(tmp_path / "out" / "results.jsonl")[1]) == 1
    assert main(predict_args([str(src)], tmp_path / "o2", "--max-megapixels", "0")) == 2


def test_unwritable_output_and_a_full_disk_end_with_one_line_and_exit_3(tmp_path, photos, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(predict_args([str(photos["new"])], blocker / "out")) == 3
    err = capsys.readouterr().err
    assert "winclip: error: cannot write the results in" in err and "Traceback" not in err
    out = tmp_path / "full"
    out.mkdir()
    (out / "results.csv").symlink_to("/dev/full")  # a link in --out: refused, never written through (issue 22)
    assert main(predict_args([str(photos["new"])], out, "--overwrite")) == 2
    assert "results.csv: is a symbolic link" in capsys.readouterr().err
    (out / "results.csv").unlink()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "overlays" / "0.png"))

    monkeypatch.setattr("winclip.inspection.folder_run.write_new", full_disk)  # every picture: ENOSPC
    assert main(predict_args([str(photos["new"])], out, "--overwrite")) == 3
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("winclip: error")]
    assert len(line) == 1 and "No space left on device" in line[0] and "--resume" in line[0]


def test_threshold_options_keep_the_profiles_review_band_while_it_is_below_the_threshold():
    profile = Profile.create(make_model(), "bottle", []).with_thresholds(0.6, 0.4)

    def request(*extra: str) -> PredictRequest:
        return PredictRequest.of(
            build_parser().parse_args(["predict", "a.png", "--out", "o", "--profile", "p", *extra])
        )

    def applied(threshold, review):
        extra = [] if threshold is None else ["--threshold", str(threshold)]
        extra += [] if review is None else ["--review-threshold", str(review)]
        p = request(*extra).thresholds_on(profile)
        return p.threshold, p.review_threshold

    assert request().thresholds_on(profile) is profile
    assert applied(0.7, None) == (0.7, 0.4)  # --threshold alone keeps the calibrated band
    assert applied(0.3, None) == (0.3, None)  # a band above the new threshold cannot stand
    assert applied(None, 0.5) == (0.6, 0.5)
    assert applied(0.8, 0.2) == (0.8, 0.2)


def test_predict_logs_plain_lines_off_a_terminal_and_counts_in_the_right_number(tmp_path, rng, capsys):
    Image.fromarray(textured(rng, 48, 64)).save(tmp_path / "one.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "one.png"), "--object", "widget", "--out", str(out), *TINY_MODEL]) == 0
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err and "it/s" not in err and "img/s" not in err  # no tqdm frames in a log
    assert "predict: 1 image -> " in err and "0 references" in err
    assert "predict: 1 of 1 image, " in err and "predict: 1 image: " in err


def test_on_ray_auto_runs_what_predict_runs_here_but_never_a_path_chosen_for_this_cpu(monkeypatch):
    import dataclasses

    from winclip.cli import cluster
    from winclip.cli.requests import RayRequest
    from winclip.inspection import precision_check

    profile = Profile.create(make_model(), "bottle", [])
    args = build_parser().parse_args(["predict", "a.png", "--out", "o", "--profile", "p", "--backbone", TINY,
                                      "--pretrained", "none", "--ray", "127.0.0.1:1"])  # fmt: skip
    request, ray = PredictRequest.of(args), RayRequest.of(args)
    assert ray is not None
    here = precision_check.resolve(profile, request.model.spec(profile))  # no evidence: fp32, and why
    job = cluster._model_job(request, ray, profile.options, profile)
    assert (job.spec.precision, job.spec.precision_reason) == ("fp32", here.precision_reason)
    assert "no precision evidence" in str(here.precision_reason)

    def evidence_picks_bf16(profile: Profile, spec):
        return dataclasses.replace(spec, precision="bf16", precision_reason="auto: bf16, evidence on this CPU")

    monkeypatch.setattr(precision_check, "resolve", evidence_picks_bf16)
    job = cluster._model_job(request, ray, profile.options, profile)
    assert job.spec.precision == "fp32" and "not necessarily the workers'" in str(job.spec.precision_reason)
