"""`winclip predict`'s folder run (winclip.inspection.folder_run): inputs, outputs, error rows, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from helpers import make_model, textured
from winclip.inspection import folder_run as workflow
from winclip.inspection.folder_run import OutputExistsError, read_records, run_predict
from winclip.inspection.inputs import discover
from winclip.inspection.inspector import Inspector
from winclip.inspection.profile import Profile


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)
    return str(path)


@pytest.fixture
def inspector(tmp_path, rng) -> Inspector:
    model = make_model()
    refs = [_png(tmp_path / "refs" / f"{i}.png", textured(rng, 64, 64)) for i in range(2)]
    return Inspector(Profile.create(model, "widget", refs, threshold=0.3), model)


def _records(out: Path) -> list[dict]:
    header, results = read_records(out / "results.jsonl")
    assert header is not None and header["type"] == "header"
    return results


def test_discover_files_folders_globs_and_collisions(tmp_path, rng):
    img = textured(rng, 16, 16)
    for rel in ("a/x.png", "a/sub/y.jpg", "a/.hidden/z.png", "a/notes.txt", "b/w.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            (tmp_path / rel).write_text("hi")
        else:
            Image.fromarray(img).save(tmp_path / rel)
    found = discover(
        [str(tmp_path / "a"), str(tmp_path / "b" / "*.png"), str(tmp_path / "nothing*.png"), str(tmp_path / "gone.png")]
    )
    assert [(i.path.relative_to(tmp_path).as_posix(), str(i.rel)) for i in found.images] == [
        ("a/sub/y.jpg", "sub/y"),
        ("a/x.png", "x"),
        ("b/w.png", "w"),
        ("gone.png", "gone"),
    ]
    assert found.unmatched == (str(tmp_path / "nothing*.png"),)
    with pytest.raises(ValueError, match="would both write outputs named x"):
        discover([str(tmp_path / "a"), str(tmp_path / "a" / "x.png"), str(tmp_path / "c" / "x.png")])


def test_a_folder_of_mixed_inputs_gives_outputs_for_good_ones_and_error_rows_for_bad_ones(
    tmp_path, rng, inspector, capsys
):
    src = tmp_path / "in"
    rgb = textured(rng, 60, 90)
    sizes = {
        "gray.png": _png(src / "gray.png", rgb[..., 0]),
        "rgba.png": _png(src / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])),
        "deep/sixteen.png": _png(src / "deep" / "sixteen.png", (rgb[..., 1].astype(np.uint16) * 257)),
        "big.png": _png(src / "big.png", textured(rng, 1000, 1500)),
    }
    (src / "corrupt.png").write_bytes((src / "gray.png").read_bytes()[:60])
    (src / "zero.png").write_bytes(b"")
    (src / "text.png").write_text("not a picture")
    _png(src / "tiny.png", rgb[:4, :4])
    assert Image.open(sizes["deep/sixteen.png"]).mode.startswith("I")
    out = tmp_path / "out"
    summary = run_predict(inspector, discover([str(src)]).images, out, save_maps=True, progress=False)
    assert summary.failed == 4 and sum(summary.labels.values()) == 4
    records = {Path(r["path"]).relative_to(src).as_posix(): r for r in _records(out)}
    assert sorted(records) == sorted(sizes)
    expected_size = {"gray.png": (90, 60), "rgba.png": (90, 60), "deep/sixteen.png": (90, 60), "big.png": (1500, 1000)}
    for name, r in records.items():
        stem = name.rsplit(".", 1)[0]
        assert (r["width"], r["height"]) == expected_size[name]
        overlay = Image.open(out / "overlays" / f"{stem}.png")
        mask = Image.open(out / "masks" / f"{stem}.png")
        raw = Image.open(out / "maps" / f"{stem}.tiff")
        assert overlay.size == mask.size == raw.size == expected_size[name]
        assert overlay.mode == "RGB" and mask.mode == "L" and raw.mode == "F"
        m = np.asarray(raw)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        np.testing.assert_array_equal(np.asarray(mask) == 255, m >= r["threshold"])
        assert r["score"] == pytest.approx(r["model_score"]) and 0 <= r["score"] <= 1
    with (out / "errors.csv").open() as f:
        errors = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f)}
    assert errors == {
        "corrupt.png": errors["corrupt.png"],
        "text.png": "not an image file (format not recognised)",
        "tiny.png": "image is 4x4 pixels, smaller than the minimum 8",
        "zero.png": "file is empty (0 bytes)",
    }
    assert errors["corrupt.png"].startswith("cannot decode image (") and "truncated or corrupt" in errors["corrupt.png"]
    err = capsys.readouterr().err
    assert f"winclip: {src / 'zero.png'}: file is empty (0 bytes)" in err
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [r["path"] for r in _records(out)]


def test_regions_in_the_records_are_the_masks_connected_components(tmp_path, rng, inspector):
    src = tmp_path / "in"
    for i in range(3):
        img = textured(rng, 80, 80)
        img[10 + 20 * i : 30 + 20 * i, 40:70] = (255, 0, 255)
        _png(src / f"{i}.png", img)
    low = Inspector(inspector.profile.with_thresholds(0.2), inspector.model)
    run_predict(low, discover([str(src)]).images, tmp_path / "out", progress=False)
    records = _records(tmp_path / "out")
    assert len(records) == 3 and sum(len(r["regions"]) for r in records) > 0
    for r in records:
        mask = np.asarray(Image.open(tmp_path / "out" / r["mask"])) == 255
        raw_map = inspector.inspect([r["path"]])[0].map
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        assert len(r["regions"]) == n
        got = {(g["x"], g["y"], g["width"], g["height"], g["area"]) for g in r["regions"]}
        want = set()
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            want.add(
                (sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start, int((labels == i).sum()))
            )
        assert got == want
        for g in r["regions"]:
            box = raw_map[g["y"] : g["y"] + g["height"], g["x"] : g["x"] + g["width"]]
            assert g["peak"] == pytest.approx(float(box[box >= 0.2].max()))


def test_an_roi_removes_a_painted_defect_outside_it(tmp_path, rng):
    good = textured(rng, 64, 64)
    bad = good.copy()
    bad[4:20, 4:20] = (255, 0, 255)
    model = make_model()
    plain = Profile.create(model, "widget", [Image.fromarray(good)])
    before = Inspector(plain, model).inspect([bad])[0]
    peak = np.unravel_index(np.argmax(before.map), before.map.shape)
    assert 0 <= peak[0] < 24 and 0 <= peak[1] < 24  # the defect is the hottest spot
    threshold = float(0.95 * before.map.max())
    roi = np.zeros((64, 64), np.uint8)
    roi[:, 32:] = 255  # right half only; the defect is top-left
    for profile, inside in ((plain, True), (Profile.create(model, "widget", [Image.fromarray(good)], roi=roi), False)):
        r = Inspector(profile.with_thresholds(threshold), model).inspect([bad])[0]
        on_defect = [g for g in r.regions if g.x < 24 and g.y < 24]
        assert bool(on_defect) is inside
        assert (r.map[:, :32] == 0).all() is not inside
    masked = Inspector(Profile.create(model, "widget", [Image.fromarray(good)], roi=roi), model).inspect([bad])[0]
    assert masked.score < before.score and masked.model_score == pytest.approx(before.score)
    assert masked.score == pytest.approx(before.score * before.map[:, 32:].max() / before.map.max(), rel=1e-5)


@pytest.mark.slow
def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, rng, inspector, monkeypatch):
    src = tmp_path / "in"
    for i in range(7):
        _png(src / ("sub" if i % 2 else ".") / f"{i}.png", textured(rng, 48, 64))
    (src / "broken.png").write_bytes(b"\x89PNG")
    images = discover([str(src)]).images
    run_predict(inspector, images, tmp_path / "full", progress=False, batch_size=3)

    real = workflow.render
    calls = []

    def interrupt_after_four(*args):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(workflow, "render", interrupt_after_four)
    with pytest.raises(KeyboardInterrupt):
        run_predict(inspector, images, tmp_path / "part", progress=False, batch_size=3)
    assert len(_records(tmp_path / "part")) == 4
    monkeypatch.setattr(workflow, "render", real)
    with pytest.raises(OutputExistsError, match="--resume"):
        run_predict(inspector, images, tmp_path / "part", progress=False)
    summary = run_predict(inspector, images, tmp_path / "part", resume=True, progress=False, batch_size=3)
    assert summary.resumed == 4 and summary.failed == 1 and sum(summary.labels.values()) == 7
    full, part = _records(tmp_path / "full"), _records(tmp_path / "part")
    assert len(full) == 7 and [r["path"] for r in part] == [r["path"] for r in full]
    for a, b in zip(full, part, strict=True):
        assert a.keys() == b.keys() and a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert a["label"] == b["label"] and a["regions"] == b["regions"]
        assert (tmp_path / "full" / a["overlay"]).read_bytes() == (tmp_path / "part" / b["overlay"]).read_bytes()
    assert (tmp_path / "full" / "errors.csv").read_text() == (tmp_path / "part" / "errors.csv").read_text()
    # the same rows; numbers within 1e-6: on AVX-512 CPUs the last bits depend on which images share a batch
    rows = [list(csv.DictReader((tmp_path / run / "results.csv").open())) for run in ("full", "part")]
    assert len(rows[0]) == len(rows[1]) == 7
    for a, b in zip(*rows, strict=True):
        for key in a:
            if key in ("score", "model_score", "zero_shot", "confidence"):
                assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6)
            else:
                assert a[key] == b[key], key


def test_no_overwrite_without_asking(tmp_path, rng, inspector):
    images = discover([_png(tmp_path / "a.png", textured(rng, 32, 32))]).images
    out = tmp_path / "out"
    run_predict(inspector, images, out, progress=False)
    (out / "mine.txt").write_text("user data")
    first = (out / "results.jsonl").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_predict(inspector, images, out, progress=False)
    assert (out / "results.jsonl").read_text() == first
    with pytest.raises(ValueError, match="exclude each other"):
        run_predict(inspector, images, out, overwrite=True, resume=True, progress=False)
    run_predict(inspector, images, out, overwrite=True, progress=False)
    assert (out / "mine.txt").read_text() == "user data" and len(_records(out)) == 1
    header = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert header["profile_digest"] == inspector.profile.digest() and header["weights_id"] == "random:seed=0"
