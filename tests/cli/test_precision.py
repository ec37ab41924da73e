"""Precision on the command line: `winclip precision check`, calibrate's evidence, predict's auto and what it
records, and `winclip eval`'s fp32 default (tiny random model)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from helpers import TINY, textured
from winclip.backbones import precision
from winclip.backbones.precision import cpu_kind
from winclip.cli import build_parser, main
from winclip.inspection import precision_check as pc
from winclip.inspection.evidence import Evidence, PathEvidence
from winclip.inspection.folder_run import read_records
from winclip.inspection.profile import Profile
from winclip.options import RunPath

TINY_MODEL = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]


@pytest.fixture
def made(tmp_path, rng, capsys) -> Path:
    """A tiny profile with 3 references on disk, and photos in tmp_path/photos."""
    for name, n in (("refs", 3), ("photos", 4)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(textured(rng, 48, 64)).save(tmp_path / name / f"{i}.png")
    prof = tmp_path / "part.winclip"
    assert main(["profile", "create", "--object", "part", "--good", str(tmp_path / "refs"), "--out", str(prof),
                 *TINY_MODEL]) == 0  # fmt: skip
    capsys.readouterr()
    return prof


def test_eval_runs_fp32_unless_asked(tmp_path):
    parser = build_parser()
    base = ["eval", "--dataset", "mvtec", "--root", "r", "--out", "o"]
    assert parser.parse_args(base).precision == "fp32"
    assert parser.parse_args([*base, "--precision", "bf16"]).precision == "bf16"
    assert parser.parse_args(["predict", "x.png", "--out", "o", "--object", "o"]).precision == "auto"


def test_precision_check_stores_the_evidence_and_predict_says_which_path(made, tmp_path, capsys):
    assert main(["precision", "check", "--profile", str(made), "--paths", "torch-bf16"]) == 0
    out = capsys.readouterr().out
    evidence = Profile.load(made).evidence
    assert evidence is not None and [p.path for p in evidence.paths] == ["torch-bf16"]
    assert evidence.source == "leave-one-out" and evidence.images == 3
    assert "torch-bf16" in out and "precision auto: " in out and "3 photo(s) (leave-one-out)" in out
    assert main(["precision", "check", "--profile", str(made), "--paths", "torch-bf16", "--images",
                 str(tmp_path / "photos")]) == 0  # fmt: skip
    assert Profile.load(made).evidence.source == "images" and Profile.load(made).evidence.images == 4
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "photos"), "--profile", str(made), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    header, records = read_records(tmp_path / "out" / "results.jsonl")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert len(rows) == len(records) == 4 and {r["precision"] for r in rows} == {header["precision"]}
    assert header["precision_reason"] in err and header["precision_reason"].startswith("auto: ")


def test_predict_runs_the_path_the_evidence_chooses(made, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(pc, "native_bf16", lambda: True)
    profile = Profile.load(made)
    row = PathEvidence("torch-bf16", 1.0, 0, 0.1, 1e-4, 1e-4, 5.0)
    ev = Evidence(profile.weights_id, pc.scoring_key(profile), profile.threshold, "images", 4, cpu_kind(), {}, 50.0,
                  (row,))  # fmt: skip
    dataclasses.replace(profile, evidence=ev).save(made, overwrite=True)
    assert main(["predict", str(tmp_path / "photos"), "--profile", str(made), "--out", str(tmp_path / "a")]) == 0
    header, _ = read_records(tmp_path / "a" / "results.jsonl")
    assert header["precision"] == "torch-bf16" and header["precision_reason"].startswith("auto: torch-bf16, evidence")
    assert "bf16 (auto: torch-bf16, evidence on 4 images photo(s)" in capsys.readouterr().err
    # a threshold given on the command line was not checked by the evidence: fp32
    assert main(["predict", str(tmp_path / "photos"), "--profile", str(made), "--out", str(tmp_path / "b"),
                 "--threshold", "0.9"]) == 0  # fmt: skip
    header, _ = read_records(tmp_path / "b" / "results.jsonl")
    assert header["precision"] == "torch-fp32" and "changed since the evidence" in header["precision_reason"]
    # resuming a run in another path is refused
    assert main(["predict", str(tmp_path / "photos"), "--profile", str(made), "--out", str(tmp_path / "a"),
                 "--resume", "--precision", "fp32"]) == 2  # fmt: skip
    assert "earlier results differ in precision" in capsys.readouterr().err


def test_calibrate_measures_the_offered_paths_on_the_held_out_photos(made, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pc, "offered_paths", lambda: [RunPath("torch", "bf16")])
    monkeypatch.setattr(precision, "offered_paths", lambda: [RunPath("torch", "bf16")])
    args = ["profile", "calibrate", str(made), "--good", str(tmp_path / "photos"), "--target-fpr", "0.25"]
    assert main([*args, "--no-precision-check"]) == 0
    assert Profile.load(made).evidence is None
    assert main(args) == 0
    out = capsys.readouterr().out
    evidence = Profile.load(made).evidence
    assert evidence is not None and evidence.source == "held-out" and evidence.images == 4
    assert evidence.threshold == Profile.load(made).threshold and "torch-bf16" in out
    assert main([*args, "--precision", "bf16"]) == 0
    assert "precision check skipped: calibrated outside PyTorch fp32" in capsys.readouterr().err
    stored = json.loads((made / "profile.json").read_text())
    assert stored["evidence"]["paths"][0]["path"] == "torch-bf16"


def test_precision_check_fails_in_one_line_without_photos(made, capsys):
    profile = Profile.load(made)
    for name in profile.reference_names:
        Path(name).unlink()
    assert main(["precision", "check", "--profile", str(made), "--paths", "torch-bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("winclip: error: no photos to measure precision on") and err.count("\n") == 1
