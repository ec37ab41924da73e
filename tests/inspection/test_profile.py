"""Inspection profiles (winclip.inspection.profile): create, save, load, bind, calibrate, add good photos."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_model, textured
from winclip.inspection.inspector import Inspector
from winclip.inspection.profile import CalibrationChangedWarning, Profile, ProfileMismatchError


def _save_images(folder: Path, rng: np.random.Generator, n: int, size=(64, 64)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(textured(rng, *size)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def images(tmp_path, rng):
    return {
        "refs": _save_images(tmp_path / "refs", rng, 2),
        "queries": _save_images(tmp_path / "queries", rng, 3, size=(48, 80)),
        "holdout": _save_images(tmp_path / "holdout", rng, 5),
    }


def test_round_trip_scores_match_the_in_memory_model(tmp_path, images):
    model = make_model()
    profile = Profile.create(model, "screw", images["refs"], normal_states=["shiny {o}"])
    expected = model.predict(images["queries"])
    folder = profile.save(tmp_path / "screw.winclip")
    assert sorted(p.name for p in folder.iterdir()) == ["profile.json", "tensors.safetensors"]
    loaded = Profile.load(folder)
    assert loaded.digest() == profile.digest()
    assert loaded.normal_states[-1] == "shiny {o}" and loaded.shots == 2
    got = Inspector(loaded, make_model()).inspect(images["queries"])
    assert len(got) == 3
    for r, score, full in zip(got, expected.scores, expected.maps, strict=True):
        assert r.error is None and r.score == pytest.approx(float(score), abs=1e-6)
        assert r.map.shape == tuple(full.shape) == (48, 80)
        np.testing.assert_allclose(r.map, full.numpy(), atol=1e-6)


def test_loading_and_applying_a_profile_encodes_nothing(tmp_path, images, monkeypatch):
    Profile.create(make_model(), "screw", images["refs"]).save(tmp_path / "p")
    model = make_model()
    calls = {"image": 0, "text": 0}
    real_encode = model.backbone.encode
    import winclip.backbones.openclip as module

    real_text = module.encode_text

    def count_image(x, scales):
        calls["image"] += 1
        return real_encode(x, scales)

    def count_text(clip, tokenizer, texts):
        calls["text"] += 1
        return real_text(clip, tokenizer, texts)

    monkeypatch.setattr(model.backbone, "encode", count_image)
    monkeypatch.setattr(module, "encode_text", count_text)
    inspector = Inspector(Profile.load(tmp_path / "p"), model)
    assert calls == {"image": 0, "text": 0}
    inspector.inspect(images["queries"][:1])
    assert calls == {"image": 1, "text": 0}  # only the query


def test_add_good_makes_the_image_its_own_reference(tmp_path, images, monkeypatch):
    model = make_model()
    profile = Profile.create(model, "screw", images["refs"])
    target = images["queries"][0]
    before = Inspector(profile, model).inspect([target])[0]
    assert before.score > 0.5 * before.zero_shot + 1e-4  # not yet a reference
    encoded = []
    real_encode = model.backbone.encode
    monkeypatch.setattr(model.backbone, "encode", lambda x, scales: encoded.append(len(x)) or real_encode(x, scales))
    grown = profile.add_good(model, [target])
    assert encoded == [1]  # only the new image was encoded
    assert grown.shots == 3 and grown.reference_names[-1] == target
    assert len(grown.references) == 3 and torch.equal(grown.references.image[:2], profile.references.image)
    after = Inspector(grown, model).inspect([target])[0]
    assert after.score == pytest.approx(0.5 * after.zero_shot, abs=1e-5)
    assert after.zero_shot == pytest.approx(before.zero_shot, abs=1e-6)


def test_add_good_recalibrates_from_the_stored_calibration_images(images):
    model = make_model()
    profile = Profile.create(model, "screw", images["refs"]).calibrate(model, images["holdout"], target_fpr=0.2)
    grown = profile.add_good(model, images["holdout"][:1])
    assert grown.calibration is not None and grown.calibration.target_fpr == 0.2
    assert [g.name for g in grown.calibration.good] == images["holdout"]
    rescored = [r.score for r in Inspector(grown, model).inspect(images["holdout"])]
    assert [g.score for g in grown.calibration.good] == pytest.approx(rescored, abs=1e-6)
    assert grown.threshold == pytest.approx(float(np.quantile(rescored, 0.8)), abs=1e-6)
    assert grown.calibration.good[0].score < profile.calibration.good[0].score  # now a reference


def test_add_good_warns_when_a_calibration_image_changed_on_disk(images, rng):
    model = make_model()
    profile = Profile.create(model, "screw", images["refs"]).calibrate(model, images["holdout"], target_fpr=0.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile.add_good(model, images["queries"][:1])
    assert not [w for w in caught if w.category is CalibrationChangedWarning]  # nothing changed: silent
    changed = images["holdout"][3]
    Image.fromarray(textured(rng, 64, 64)).save(changed)
    expected = "1 calibration image changed on disk since calibration; re-scored as found now: "
    expected += str(Path(changed).resolve())
    with pytest.warns(CalibrationChangedWarning, match=f"^{re.escape(expected)}$"):
        grown = profile.add_good(model, images["queries"][:1])
    new_score = Inspector(grown, model).inspect([changed])[0].score
    assert grown.calibration.good[3].score == pytest.approx(new_score, abs=1e-6)  # re-scored as it is now


def test_calibrate_sets_thresholds_report_and_survives_a_round_trip(tmp_path, images):
    model = make_model()
    profile = Profile.create(model, "screw", images["refs"])
    bad = [str(tmp_path / "missing.png")] + images["queries"]
    cal = profile.calibrate(model, images["holdout"], bad, target_fpr=0.2, review_fpr=0.6)
    scores = [r.score for r in Inspector(profile, model).inspect(images["holdout"])]
    assert cal.threshold == pytest.approx(float(np.quantile(scores, 0.8)), abs=1e-7)
    assert cal.review_threshold == pytest.approx(float(np.quantile(scores, 0.4)), abs=1e-7)
    c = cal.calibration
    assert len(c.good) == 5 and len(c.bad) == 3 and c.skipped[0][0] == "bad" and "not found" in c.skipped[0][2]
    assert c.fpr == pytest.approx(np.mean(np.array(scores) >= cal.threshold))
    assert c.recall is not None and c.f1_threshold is not None
    report = c.report()
    assert "threshold" in report and "review" in report and "#" in report
    cal.save(tmp_path / "cal")
    back = Profile.load(tmp_path / "cal")
    assert back.digest() == cal.digest() and back.calibration == c
    with pytest.raises(ValueError, match="review FPR"):
        profile.calibrate(model, images["holdout"], target_fpr=0.2, review_fpr=0.1)


def test_a_profile_from_another_backbone_or_checkpoint_is_refused(tmp_path, images):
    profile = Profile.create(make_model(), "screw", images["refs"])
    data = json.loads((profile.save(tmp_path / "p") / "profile.json").read_text())
    data["weights_id"] = "sha256:" + "ab" * 32
    (tmp_path / "p" / "profile.json").write_text(json.dumps(data))
    with pytest.raises(
        ProfileMismatchError, match="made with tiny-vit \\(sha256:abab.*loaded model is tiny-vit \\(random:seed=0\\)"
    ):
        Inspector(Profile.load(tmp_path / "p"), make_model())
    data["backbone"] = "ViT-B-16"
    (tmp_path / "p" / "profile.json").write_text(json.dumps(data))
    with pytest.raises(ProfileMismatchError, match="made with ViT-B-16 .*--backbone ViT-B-16 --pretrained none"):
        Profile.load(tmp_path / "p").apply(make_model())
    with pytest.raises(ProfileMismatchError, match="options"):
        profile.apply(make_model(temperature=0.1))


def test_save_refuses_to_overwrite_and_load_rejects_non_profiles(tmp_path, images):
    profile = Profile.create(make_model(), "screw")
    assert profile.references is None and profile.shots == 0
    profile.save(tmp_path / "p")
    with pytest.raises(FileExistsError, match="overwrite"):
        profile.save(tmp_path / "p")
    profile.with_thresholds(0.7, review=0.6).save(tmp_path / "p", overwrite=True)
    assert Profile.load(tmp_path / "p").review_threshold == 0.6
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "profile.json").write_text('{"format": "pickle"}')
    with pytest.raises(ValueError, match="not a winclip-profile"):
        Profile.load(tmp_path / "q")
    with pytest.raises(FileNotFoundError, match="not a winclip profile"):
        Profile.load(tmp_path)
    (tmp_path / "p" / "tensors.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="malformed profile"):
        Profile.load(tmp_path / "p")


def test_tiled_profile_matches_the_model_fitted_on_the_same_references(tmp_path, rng):
    refs = [Image.fromarray(textured(rng, 40, 100)) for _ in range(2)]
    query = textured(rng, 50, 120)
    expected = make_model(resize="tile").set_object("screw").fit(refs).predict([query])
    profile = Profile.create(make_model(resize="tile"), "screw", refs)
    assert profile.reference_views == (3, 3) and len(profile.references) == 6
    profile.save(tmp_path / "t")
    got = Inspector(Profile.load(tmp_path / "t"), make_model(resize="tile")).inspect([query])[0]
    assert got.score == pytest.approx(float(expected.scores[0]), abs=1e-6)
    np.testing.assert_allclose(got.map, expected.maps[0].numpy(), atol=1e-6)
    with pytest.raises(ProfileMismatchError, match="resize='tile'"):
        profile.apply(make_model())
