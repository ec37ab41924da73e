"""Measuring precision evidence on a profile's own photos and resolving auto from it
(winclip.inspection.precision_check), on the tiny random model."""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

import winclip
from helpers import TINY, make_model, textured
from winclip.backbones import precision
from winclip.backbones.precision import cpu_kind
from winclip.inspection import precision_check as pc
from winclip.inspection.evidence import Evidence, PathEvidence
from winclip.inspection.profile import Profile
from winclip.options import ModelSpec, RunPath

pytestmark = pytest.mark.filterwarnings("ignore::winclip.RandomWeightsWarning")
SPEC = ModelSpec(TINY, None, "cpu", "auto")
BF16 = RunPath("torch", "bf16")


def save(folder: Path, rng: np.random.Generator, n: int) -> list[str]:
    folder.mkdir(parents=True)
    paths = [str(folder / f"{i}.png") for i in range(n)]
    for p in paths:
        Image.fromarray(textured(rng, 64, 64)).save(p)
    return paths


@pytest.fixture
def profile(tmp_path, rng) -> Profile:
    return Profile.create(make_model(), "screw", save(tmp_path / "refs", rng, 3)).with_thresholds(0.6)


def held(profile: Profile, ms: float = 10.0, weights: str | None = None, **row) -> Profile:
    """The profile with evidence that torch-bf16 holds and is faster, for these weights on this CPU."""
    figures = {"spearman": 1.0, "flips": 0, "score_margin": 0.1, "score_diff": 1e-4, "map_rel": 1e-4, **row}
    rows = (PathEvidence("torch-bf16", ms_per_image=ms, **figures),)
    ev = Evidence(
        weights or profile.weights_id, pc.scoring_key(profile), profile.threshold, "held-out", 5, cpu_kind(), {}, 100.0,
        rows,
    )  # fmt: skip
    return dataclasses.replace(profile, evidence=ev)


def test_compare_against_a_hand_computation():
    ref = pc.Scored(np.array([0.1, 0.5, 0.62, 0.9]), [np.array([[1.0, 2.0]]), np.array([[4.0, -8.0]])] * 2, 1.0)
    got = pc.Scored(np.array([0.12, 0.61, 0.58, 0.95]), [np.array([[1.0, 2.5]]), np.array([[4.0, -8.0]])] * 2, 1.0)
    f = pc.compare(ref, got, threshold=0.6, review=None)
    assert f["flips"] == 2  # 0.5 -> 0.61 and 0.62 -> 0.58 cross 0.6
    assert f["spearman"] == pytest.approx(spearmanr(ref.scores, got.scores).statistic) == pytest.approx(0.8)
    assert f["score_diff"] == pytest.approx(0.11) and f["score_margin"] == pytest.approx(0.11 / 0.02)
    assert f["map_rel"] == pytest.approx(0.5 / 2.0)
    review = pc.compare(ref, got, threshold=0.6, review=0.55)
    assert review["flips"] == 2  # 0.5 normal -> 0.61 anomalous; 0.62 anomalous -> 0.58 review


def test_which_photos_are_measured(profile, tmp_path, rng):
    assert pc.photos_for(profile, ["a.png", "b.png"]) == pc.Photos("images", ("a.png", "b.png"))
    loo = pc.photos_for(profile, None)
    assert loo.source == "leave-one-out" and loo.paths == profile.reference_names
    calibrated = profile.calibrate(make_model(), save(tmp_path / "held", rng, 4))
    assert pc.photos_for(calibrated, None) == pc.Photos("held-out", tuple(c.name for c in calibrated.calibration.good))
    Image.fromarray(textured(rng, 64, 64)).save(profile.reference_names[0])  # changed since: not the reference
    with pytest.raises(ValueError, match="^no photos to measure precision on: .* pass --images"):
        pc.photos_for(profile, None)


def test_leave_one_out_scores_each_reference_against_the_others(profile):
    photos = pc.photos_for(profile, None)
    got = pc.score(make_model(precision="fp32"), profile, photos)
    names = list(profile.reference_names)
    for i, name in enumerate(names):
        others = make_model(precision="fp32").set_prototypes(*profile.prototypes)
        others = others.fit([n for n in names if n != name])
        assert got.scores[i] == pytest.approx(float(others.predict([name]).scores[0]), abs=1e-5)
    assert len(got.maps) == 3 and got.seconds > 0


def test_check_records_the_evidence_of_each_path(profile, monkeypatch):
    evidence = pc.check_precision(profile, SPEC, paths=[BF16])
    assert evidence.weights_id == profile.weights_id == "random:seed=0"
    assert evidence.profile_key == pc.scoring_key(profile) and evidence.cpu == cpu_kind()
    assert evidence.source == "leave-one-out" and evidence.images == 3 and evidence.threshold == 0.6
    assert evidence.libraries["winclip"] == winclip.__version__ and "torch" in evidence.libraries
    (row,) = evidence.paths
    assert row.path == "torch-bf16" and row.export is None and row.ms_per_image > 0
    assert -1 <= row.spearman <= 1 and row.flips >= 0 and 0 < row.map_rel < 0.1 and evidence.reference_ms_per_image > 0
    monkeypatch.setattr(pc, "offered_paths", lambda: [])
    assert pc.check_precision(profile, SPEC).paths == ()  # default: what this machine offers


def test_auto_runs_fp32_without_evidence_and_the_path_whose_evidence_holds(profile, monkeypatch):
    spec = pc.resolve(profile, SPEC)
    assert (spec.runtime, spec.precision) == ("torch", "fp32")
    assert (
        spec.precision_reason
        == "auto: fp32, the profile has no precision evidence (winclip precision check --profile P)"
    )
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(pc, "native_bf16", lambda: True)
    spec = pc.resolve(held(profile), SPEC)
    assert spec.precision == "bf16" and spec.precision_reason.startswith("auto: torch-bf16, evidence on 5 held-out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        model = winclip.build_model(spec)
    assert model.backbone.precision == "bf16" and "(auto: torch-bf16, evidence on 5" in winclip.model.banner(model)
    monkeypatch.setattr(pc, "native_bf16", lambda: False)
    spec = pc.resolve(held(profile), SPEC)
    assert spec.precision == "fp32" and "torch-bf16: this CPU has no native bf16" in spec.precision_reason


def test_auto_refuses_evidence_measured_on_other_weights(profile, monkeypatch):
    monkeypatch.setattr(pc, "native_bf16", lambda: True)
    assert pc.resolve(held(profile), SPEC).precision == "bf16"
    spec = pc.resolve(held(profile, weights="sha256:" + "e" * 64), SPEC)
    assert spec.precision == "fp32" and "measured on other weights" in spec.precision_reason


def test_a_changed_threshold_or_reference_set_needs_new_evidence(profile, monkeypatch, rng):
    monkeypatch.setattr(pc, "native_bf16", lambda: True)
    checked = held(profile)
    for changed in (checked.with_thresholds(0.65), checked.add_good(make_model(), [textured(rng, 64, 64)])):
        spec = pc.resolve(changed, SPEC)
        assert spec.precision == "fp32" and "changed since the evidence was measured" in spec.precision_reason


def test_an_explicit_precision_stays_and_says_what_the_evidence_says(profile, monkeypatch):
    asked = dataclasses.replace(SPEC, precision="bf16")
    assert pc.resolve(held(profile), asked).precision_reason == (
        "asked for; evidence holds: Spearman 1.0000, 0 label flip(s), |Δscore| 0.10x the margin, maps 1.0e-04"
    )
    assert pc.resolve(held(profile, flips=3), asked).precision_reason.startswith("asked for; evidence MISSES")
    assert "no evidence for this path" in pc.resolve(profile, asked).precision_reason
    gpu = dataclasses.replace(SPEC, device="cuda")
    assert pc.resolve(held(profile), gpu) == gpu  # auto = fp16 on CUDA: the CPU's evidence says nothing of it


def test_the_station_runs_the_path_all_its_profiles_agree_on(profile, tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "native_bf16", lambda: True)
    held(profile).save(tmp_path / "a")
    held(profile).save(tmp_path / "b")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "profile.json").write_text("{")
    folders = [tmp_path / "a", tmp_path / "b", tmp_path / "broken"]
    spec = pc.shared_spec(folders, SPEC)
    assert spec.precision == "bf16" and spec.precision_reason.startswith("auto: torch-bf16 for all 2 profile(s)")
    profile.save(tmp_path / "c")  # no evidence: fp32 for it, so for the station
    spec = pc.shared_spec([*folders, tmp_path / "c"], SPEC)
    assert spec.precision == "fp32" and "does not agree" in spec.precision_reason
    assert pc.evidence_note(profile, "torch-fp32").startswith("auto: fp32, the profile has no precision evidence")
    assert pc.evidence_note(held(profile), "torch-fp32").startswith("fp32, the reference (torch-bf16, evidence on 5")
    assert pc.evidence_note(profile, "torch-bf16").startswith("UNCHECKED: no evidence that torch-bf16 keeps")
    assert pc.evidence_note(held(profile), "torch-bf16").startswith("auto: torch-bf16, evidence on 5")


needs_int8 = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="int8 needs OpenVINO and NNCF",
)


@pytest.mark.slow
@needs_int8
def test_exports_are_cached_per_architecture_not_only_per_weights_id(profile):
    """Random weights are `random:seed=0` for every architecture: a tiny-vit export must not serve another model."""
    other = dataclasses.replace(profile, backbone="bracket-vit")
    config = dataclasses.replace(profile, model_config='{"embed_dim": 48}')
    assert profile.weights_id == other.weights_id == config.weights_id == "random:seed=0"
    assert len({pc._weights_tag(p) for p in (profile, other, config)}) == 3


def test_int8_is_quantized_on_the_profiles_good_photos_and_chosen_only_by_evidence(profile, monkeypatch, tmp_path):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path / "cache"))
    int8 = RunPath("openvino", "int8")
    evidence = pc.check_precision(profile, SPEC, paths=[int8])
    (row,) = evidence.paths
    folder = Path(row.export["folder"])
    assert folder.parent == tmp_path / "cache" / "exports" and "-int8-" in folder.name
    meta = winclip.backbones.runtime.read_export(folder).meta
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_images"] == 3  # the 3 references
    assert row.export["sha256"] == meta["files"]["vision.xml"]["sha256"] and 0 < row.map_rel < 1
    fast = dataclasses.replace(evidence, paths=(dataclasses.replace(row, spearman=1.0, flips=0, map_rel=0.0),))
    fast = dataclasses.replace(fast, paths=(dataclasses.replace(fast.paths[0], ms_per_image=1.0),))
    spec = pc.resolve(dataclasses.replace(profile, evidence=fast), SPEC)
    assert (spec.runtime, spec.precision, spec.export_dir) == ("openvino", "int8", str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        model = profile.bind(winclip.build_model(spec))
    assert model.backbone.precision == "int8" and len(model.predict(list(profile.reference_names)).scores) == 3
    (folder / "export.json").unlink()  # the export is gone: auto goes back to fp32 and says why
    spec = pc.resolve(dataclasses.replace(profile, evidence=fast), SPEC)
    assert spec.precision == "fp32" and f"its export {folder} is not there" in spec.precision_reason
    assert torch.get_num_threads() >= 1
