"""Layouts beside mvtec/visa/folder: BTAD, MPDD, MVTec LOCO AD, Real-IAD and the CSV manifest (winclip.paper.data)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY
from helpers.layouts import (
    BTAD_EXTENSIONS,
    LOCO_VALUES,
    REALIAD_VIEWS,
    make_btad,
    make_loco,
    make_manifest,
    make_realiad,
)
from helpers.synthetic import make_mvtec
from winclip import WinCLIP
from winclip.cli import build_parser, main
from winclip.paper.data import LAYOUTS, DatasetError, Sample, load_dataset, load_mask
from winclip.paper.protocol import sample_mask

STAMP = "20230922093358"  # the time stamp in synthetic Real-IAD file names


def _problems(layout: str, root: Path, classes: list[str] | None = None) -> list[str]:
    with pytest.raises(DatasetError) as info:
        load_dataset(layout, root, classes)
    assert str(info.value).splitlines()[1:] == info.value.problems
    return info.value.problems


def _shrink(path: Path, size: tuple[int, int]) -> None:
    """Resize the image file at ``path`` to ``size`` = (W, H), keeping its format."""
    with Image.open(path) as image:
        resized = image.resize(size, Image.Resampling.NEAREST)
    resized.save(path)


def _read_rows(table: Path) -> list[list[str]]:
    with table.open(newline="") as handle:
        return list(csv.reader(handle))


def _write_rows(table: Path, rows: list[list[str]]) -> None:
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_registry_names_every_layout_and_the_cli_offers_them() -> None:
    assert LAYOUTS == ("mvtec", "visa", "folder", "mpdd", "btad", "mvtec-loco", "realiad", "realiad-sv", "manifest")
    parser = build_parser()
    for layout in LAYOUTS:
        assert parser.parse_args(["eval", "--dataset", layout, "--root", "r", "--out", "o"]).dataset == layout


def test_root_is_a_folder_except_for_the_manifest(tmp_path: Path) -> None:
    table = make_manifest(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=1)
    assert _problems("manifest", tmp_path) == [f"{tmp_path}: is a folder, but the manifest layout's root is a file"]
    assert _problems("btad", table) == [f"{table}: is a file, but the btad layout's root is a folder"]
    missing = tmp_path / "nope.csv"
    assert _problems("manifest", missing) == [f"{missing}: dataset root does not exist"]


# Sample and load_mask: several masks per image


def test_sample_masks_accept_one_path_none_or_several() -> None:
    one = Sample(Path("a.png"), 1, "crack", Path("a_mask.png"))
    assert one.masks == (Path("a_mask.png"),) and one.mask == Path("a_mask.png")
    good = Sample(Path("b.png"), 0, "good")
    assert good.masks == () and good.mask is None
    assert Sample(Path("b.png"), 0, "good", None) == good
    several = Sample(Path("c.png"), 1, "logical", [Path("c/000.png"), "c/001.png"])
    assert several.masks == (Path("c/000.png"), Path("c/001.png")) and several.mask == Path("c/000.png")
    assert hash(several) == hash(Sample(Path("c.png"), 1, "logical", (Path("c/000.png"), Path("c/001.png"))))


def test_load_mask_unites_masks_and_names_the_one_of_another_size(tmp_path: Path) -> None:
    first, second = np.zeros((4, 6), dtype=np.uint8), np.zeros((4, 6), dtype=np.uint8)
    first[0, :3], second[0, 2:4], second[3, 5] = 3, 200, 1
    Image.fromarray(first).save(tmp_path / "000.png")
    Image.fromarray(second).save(tmp_path / "001.png")
    masks = (tmp_path / "000.png", tmp_path / "001.png")
    expected = np.zeros((4, 6), dtype=bool)
    expected[0, :4] = expected[3, 5] = True
    np.testing.assert_array_equal(load_mask(masks, (4, 6)), expected)
    np.testing.assert_array_equal(load_mask(masks[1], (4, 6)), second != 0)
    assert not load_mask((), (4, 6)).any()
    Image.fromarray(second[:, :5]).save(tmp_path / "001.png")
    with pytest.raises(DatasetError, match=r"001.png: mask is 5x4 but 6x4 was expected \(WxH\)"):
        load_mask(masks, (4, 6))


# BTAD


def test_btad_masks_match_by_stem_across_extensions(tmp_path: Path) -> None:
    root = make_btad(tmp_path, n_train=4, n_good=2, n_bad=3)
    data = load_dataset("btad", root)
    assert [c.name for c in data] == ["01", "02", "03"]
    for c in data:
        image_ext, mask_ext = BTAD_EXTENSIONS[c.name]
        base = root / c.name
        assert c.train_good == tuple(base / "train" / "ok" / f"{i:04d}{image_ext}" for i in range(4))
        assert [(s.path, s.label, s.defect, s.masks) for s in c.test] == [
            *[
                (
                    base / "test" / "ko" / f"{i:04d}{image_ext}",
                    1,
                    "ko",
                    (base / "ground_truth" / "ko" / f"{i:04d}{mask_ext}",),
                )
                for i in range(3)
            ],
            *[(base / "test" / "ok" / f"{i:04d}{image_ext}", 0, "good", ()) for i in range(2)],
        ]
        for sample in c.test[:3]:
            mask = load_mask(sample.masks, (64, 64))
            painted = np.asarray(Image.open(sample.path))[mask]
            assert mask.any() and (painted == painted[0]).all()  # one flat defect colour inside the mask


def test_btad_problems(tmp_path: Path) -> None:
    root = make_btad(tmp_path, classes=("01",), n_train=1, n_good=1, n_bad=3)
    truth, ko = root / "01" / "ground_truth" / "ko", root / "01" / "test" / "ko"
    (truth / "0000.png").unlink()
    shutil.copy(truth / "0001.png", truth / "0001.bmp")
    _shrink(truth / "0002.png", (32, 32))
    shutil.rmtree(root / "01" / "train" / "ok")
    assert _problems("btad", root) == [
        f"{root / '01' / 'train' / 'ok'}: missing",
        f"{ko / '0000.bmp'}: no mask; expected {truth / '0000'}.<ext>",
        f"{ko / '0001.bmp'}: several masks match: 0001.bmp, 0001.png",
        f"{truth / '0002.png'}: mask is 32x32 but its image {ko / '0002.bmp'} is 64x64 (WxH)",
    ]


# MPDD


def test_mpdd_reads_the_mvtec_tree(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("bracket_black", "tubes"), n_train=2, n_good=1, n_bad=2)
    data = load_dataset("mpdd", root)
    assert [c.name for c in data] == ["bracket_black", "tubes"]
    assert data == load_dataset("mvtec", root)
    mask = root / "tubes" / "ground_truth" / "blob" / "001_mask.png"
    mask.unlink()
    assert _problems("mpdd", root) == [f"{root / 'tubes' / 'test' / 'blob' / '001.png'}: no mask; expected {mask}"]


# MVTec LOCO AD


def test_loco_unites_every_mask_of_an_image_and_ignores_validation(tmp_path: Path) -> None:
    root = make_loco(tmp_path, n_train=3, n_val=2, n_good=2, n_bad=4, size=(48, 64))
    data = load_dataset("mvtec-loco", root)
    assert [c.name for c in data] == ["breakfast_box", "pushpins"]
    for c in data:
        base = root / c.name
        assert c.train_good == tuple(base / "train" / "good" / f"{i:03d}.png" for i in range(3))
        listed = [(s.path.relative_to(base).as_posix(), s.label, s.defect, [m.name for m in s.masks]) for s in c.test]
        assert listed == [
            ("test/good/000.png", 0, "good", []),
            ("test/good/001.png", 0, "good", []),
            ("test/logical_anomalies/000.png", 1, "logical_anomalies", ["000.png"]),
            ("test/logical_anomalies/002.png", 1, "logical_anomalies", ["000.png", "001.png", "002.png"]),
            ("test/structural_anomalies/001.png", 1, "structural_anomalies", ["000.png", "001.png"]),
            ("test/structural_anomalies/003.png", 1, "structural_anomalies", ["000.png"]),
        ]
        bad = [s for s in c.test if s.label == 1]
        assert all(m.parent == base / "ground_truth" / s.defect / s.path.stem for s in bad for m in s.masks)
        for sample in bad:
            raws = [np.asarray(Image.open(m)) for m in sample.masks]
            assert set(np.unique(np.concatenate([r.ravel() for r in raws]))) == {0, *LOCO_VALUES[: len(raws)]}
            painted = (np.asarray(Image.open(sample.path)) == (255, 0, 255)).all(axis=-1)
            union = load_mask(sample.masks, (48, 64))
            np.testing.assert_array_equal(union, painted)  # every painted pixel, from whichever mask
            np.testing.assert_array_equal(sample_mask(sample, (48, 64), None), union)  # what evaluation scores
            assert sample_mask(sample, (48, 64), 24).sum() > 0


def test_loco_problems(tmp_path: Path) -> None:
    root = make_loco(tmp_path, classes=("pushpins",), n_train=1, n_val=0, n_good=1, n_bad=3, size=(48, 64))
    truth, test = root / "pushpins" / "ground_truth", root / "pushpins" / "test"
    shutil.rmtree(truth / "logical_anomalies" / "000")
    (truth / "logical_anomalies" / "002" / "000.png").unlink()  # two of its three masks remain
    second = truth / "structural_anomalies" / "001" / "001.png"
    _shrink(second, (32, 16))
    assert _problems("mvtec-loco", root) == [
        f"{test / 'logical_anomalies' / '000.png'}: no mask; expected {truth / 'logical_anomalies' / '000'}/000.png",
        f"{second}: mask is 32x16 but its image {test / 'structural_anomalies' / '001.png'} is 64x48 (WxH)",
    ]


# Real-IAD


def _realiad_name(cls: str, sample: int, code: str, view: str) -> str:
    folder = f"OK/S{sample:04d}" if code == "OK" else f"NG/{code}/S{sample:04d}"
    return f"{folder}/{cls}_{sample:04d}_{'OK' if code == 'OK' else 'NG'}_{view}_{STAMP}.jpg"


def test_realiad_takes_every_view_as_an_image(tmp_path: Path) -> None:
    root = make_realiad(tmp_path, n_train=2, n_good=1, n_bad=2)
    data = load_dataset("realiad", root)
    assert [c.name for c in data] == ["audiojack", "toy_brick"]
    for c in data:
        base = root / c.name
        assert c.train_good == tuple(
            sorted(base / _realiad_name(c.name, s, "OK", v) for s in (0, 1) for v in REALIAD_VIEWS)
        )
        anomalous = [
            (s.path.relative_to(base).as_posix(), s.defect, [m.relative_to(base).as_posix() for m in s.masks])
            for s in c.test
            if s.label == 1
        ]
        expected = [
            (_realiad_name(c.name, s, code, v), code) for s, code in ((4, "AK"), (3, "BX")) for v in ("C1", "C3")
        ]
        assert anomalous == [(name, code, [name.replace(".jpg", "_mask.png")]) for name, code in expected]
        good = [s for s in c.test if s.label == 0]
        assert all(s.defect == "good" and s.masks == () for s in good)
        assert sorted(s.path.relative_to(base).as_posix() for s in good) == sorted(
            [_realiad_name(c.name, 2, "OK", v) for v in REALIAD_VIEWS]
            + [_realiad_name(c.name, s, code, v) for s, code in ((3, "BX"), (4, "AK")) for v in ("C2", "C4", "C5")]
        )  # the views of an NG sample that do not show the defect are listed OK, so they are good
        for sample in c.test:
            assert load_mask(sample.masks, (64, 64)).any() == (sample.label == 1)


def test_realiad_sv_reads_the_single_view_split(tmp_path: Path) -> None:
    root = make_realiad(tmp_path, n_train=2, n_good=1, n_bad=2)
    for c in load_dataset("realiad-sv", root):
        base = root / c.name
        assert c.train_good == tuple(base / _realiad_name(c.name, s, "OK", "C1") for s in (0, 1))
        assert [(s.path.relative_to(base).as_posix(), s.label) for s in c.test] == [
            (_realiad_name(c.name, 4, "AK", "C1"), 1),
            (_realiad_name(c.name, 3, "BX", "C1"), 1),
            (_realiad_name(c.name, 2, "OK", "C1"), 0),
        ]


def test_realiad_finds_its_jsons_beside_root_or_one_level_down(tmp_path: Path) -> None:
    root = make_realiad(tmp_path, classes=("audiojack",), n_train=1, n_good=1, n_bad=1)
    (tmp_path / "realiad_jsons_sv").rename(tmp_path / "realiad_jsons" / "realiad_jsons_sv")  # as anomalib has it
    assert [len(c.test) for c in load_dataset("realiad-sv", root)] == [2]
    shutil.rmtree(tmp_path / "realiad_jsons")
    here = tmp_path.resolve()
    assert _problems("realiad", root) == [
        (
            f"{root}: no <class>.json files in {here / 'realiad_jsons'} or {here / 'realiad_jsons' / 'realiad_jsons'} "
            "(root is the image folder of one resolution, e.g. Real-IAD/realiad_256; realiad_jsons is read beside it)"
        )
    ]


def test_realiad_problems(tmp_path: Path) -> None:
    root = make_realiad(tmp_path, classes=("audiojack",), n_train=1, n_good=1, n_bad=2)
    table = tmp_path.resolve() / "realiad_jsons" / "audiojack.json"
    doc = json.loads(table.read_text())
    entries = doc["test"]
    first, second, third, _ = [i for i, e in enumerate(entries) if e["anomaly_class"] != "OK"]
    base = root / "audiojack"
    (base / entries[first]["mask_path"]).unlink()
    entries[second]["mask_path"] = None
    _shrink(base / entries[third]["mask_path"], (32, 32))
    entries.append({"anomaly_class": "OK"})
    doc["val"] = []
    table.write_text(json.dumps(doc))
    assert _problems("realiad", root) == [
        f"{table}: unknown split 'val' (expected meta, train or test)",
        f"{table}: test[{len(entries) - 1}]: expected image_path and anomaly_class strings, mask_path a string or null",
        f"{table}: test[{first}]: mask file {base / entries[first]['mask_path']} does not exist",
        f"{table}: test[{second}]: anomaly row has no mask",
        (
            f"{base / entries[third]['mask_path']}: mask is 32x32 but its image "
            f"{base / entries[third]['image_path']} is 64x64 (WxH)"
        ),
    ]
    table.write_text("{")
    unreadable, none = _problems("realiad", root)
    assert unreadable.startswith(f"{table}: not readable JSON (")
    assert none == f"{root}: no classes found for the realiad layout"
    table.write_text(json.dumps({"meta": {"prefix": 3}, "train": [], "test": []}))
    assert _problems("realiad", root) == [f"{table}: meta's prefix and normal_class must be strings", none]


# Manifest


def test_manifest_loads_classes_references_and_test_rows(tmp_path: Path) -> None:
    table = make_manifest(tmp_path, n_train=4, n_good=2, n_bad=3)
    data = load_dataset("manifest", table)
    assert [c.name for c in data] == ["gadget", "widget"]
    for c in data:
        images = tmp_path / "images" / c.name
        assert c.train_good == tuple(images / f"good_{i:03d}.png" for i in range(4))
        assert [(s.path, s.label, s.defect, s.masks) for s in c.test] == [
            *[
                (images / f"bad_{i:03d}.png", 1, "anomaly", (tmp_path / "masks" / c.name / f"bad_{i:03d}.png",))
                for i in range(3)
            ],
            *[(images / f"good_{i:03d}.png", 0, "good", ()) for i in (4, 5)],
        ]  # bad_003 is an anomalous train row: neither a reference nor a test image


@pytest.mark.parametrize("spelling", ["1", "anomaly", "Anomalous", "BAD", "defect", "ng", "0", "good", "NORMAL", "ok"])
def test_manifest_label_spellings(tmp_path: Path, spelling: str) -> None:
    table = make_manifest(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=2)
    rows = _read_rows(table)
    rows[4][1] = spelling  # the second anomalous test row (it has a mask)
    _write_rows(table, rows)
    (data,) = load_dataset("manifest", table)
    anomalous = spelling.lower() in ("1", "anomaly", "anomalous", "bad", "defect", "ng")
    assert [s.label for s in data.test if s.path.name == "bad_001.png"] == [int(anomalous)]


def test_manifest_problems_one_line_each(tmp_path: Path) -> None:
    table = make_manifest(tmp_path, classes=("widget",), n_train=2, n_good=3, n_bad=3)
    rows = _read_rows(table)  # line 2, 3: good train; 4-6: good test; 7-9: bad test; 10: bad train
    rows[2][0] = "images/widget/nope.png"
    rows[3][3] = "validation"
    rows[4][1] = "maybe"
    rows[6][2] = ""
    rows[8][4] = ""
    rows.append(rows[1])
    _write_rows(table, rows)
    wrong = tmp_path / rows[7][2]
    _shrink(wrong, (10, 10))
    assert _problems("manifest", table) == [
        f"{table}:9: empty class",
        f"{table}:3: image file {tmp_path / 'images' / 'widget' / 'nope.png'} does not exist",
        f"{table}:4: unknown split 'validation' (expected train or test)",
        f"{table}:5: unknown label 'maybe' (expected 0, good, normal, ok, 1, anomaly, anomalous, bad, defect or ng)",
        f"{table}:7: anomaly row has no mask",
        f"{table}:11: {tmp_path / rows[1][0]} is listed again (first at {table}:2)",
        f"{wrong}: mask is 10x10 but its image {tmp_path / rows[7][0]} is 48x64 (WxH)",
    ]


def test_manifest_class_problems_and_columns(tmp_path: Path) -> None:
    table = make_manifest(tmp_path, n_train=1, n_good=1, n_bad=1)
    rows = _read_rows(table)
    _write_rows(table, [row for row in rows if not (row[4] == "gadget" and row[3] == "train")])
    assert _problems("manifest", table) == [f"{table} (class 'gadget'): no normal train rows"]
    assert [c.name for c in load_dataset("manifest", table, ["widget"])] == ["widget"]
    _write_rows(table, [["class", "path", "split", "label"]])
    assert _problems("manifest", table) == [f"{table}: missing column(s) mask"]
    _write_rows(table, [rows[0]])
    assert _problems("manifest", table) == [f"{table}: no classes found for the manifest layout"]


# winclip eval on each new layout: results for every class, or every problem before any model


def _eval(layout: str, root: Path, out: Path, *shots: str) -> int:
    args = ["eval", "--dataset", layout, "--root", str(root), "--out", str(out), "--shots", *shots, "--seeds", "1"]
    return main([*args, "--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "8"])


SMALL = {
    "btad": lambda path: make_btad(path, classes=("01", "03"), n_train=2, n_good=2, n_bad=2),
    "mpdd": lambda path: make_mvtec(path, classes=("bracket_black", "tubes"), n_train=2, n_good=2, n_bad=2),
    "mvtec-loco": lambda path: make_loco(path, n_train=2, n_val=1, n_good=2, n_bad=3),
    "realiad": lambda path: make_realiad(path, n_train=1, n_good=1, n_bad=1),
    "realiad-sv": lambda path: make_realiad(path, n_train=1, n_good=1, n_bad=1),
    "manifest": lambda path: make_manifest(path, n_train=2, n_good=2, n_bad=2),
}


@pytest.mark.parametrize("layout", sorted(SMALL))
def test_eval_writes_results_for_every_class(tmp_path: Path, layout: str) -> None:
    root = SMALL[layout](tmp_path / "data")
    assert _eval(layout, root, tmp_path / "out", "0", "1") == 0
    with (tmp_path / "out" / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [c.name for c in load_dataset(layout, root)]
    assert len(names) == 2
    assert {(r["dataset"], r["class"], r["shots"], r["seed"]) for r in rows} == {
        (layout, name, shots, seed) for name in names for shots, seed in (("0", ""), ("1", "0"))
    }
    assert len(rows) == 2 * 2 * 6  # classes x runs x metrics, pixel metrics included
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)


def _broken_btad(path: Path) -> tuple[Path, list[str]]:
    root = make_btad(path, classes=("02",), n_train=1, n_good=1, n_bad=1)
    (root / "02" / "ground_truth" / "ko" / "0000.png").unlink()
    return root, [f"{root}/02/test/ko/0000.png: no mask; expected {root}/02/ground_truth/ko/0000.<ext>"]


def _broken_loco(path: Path) -> tuple[Path, list[str]]:
    root = make_loco(path, classes=("pushpins",), n_train=1, n_val=0, n_good=1, n_bad=2, size=(48, 64))
    _shrink(root / "pushpins" / "ground_truth" / "structural_anomalies" / "001" / "001.png", (8, 8))
    return root, [
        (
            f"{root}/pushpins/ground_truth/structural_anomalies/001/001.png: mask is 8x8 but its image "
            f"{root}/pushpins/test/structural_anomalies/001.png is 64x48 (WxH)"
        )
    ]


def _broken_realiad(path: Path) -> tuple[Path, list[str]]:
    root = make_realiad(path, classes=("toy_brick",), n_train=1, n_good=1, n_bad=1)
    table = path.resolve() / "realiad_jsons" / "toy_brick.json"
    table.write_text(json.dumps({**json.loads(table.read_text()), "validation": []}))
    return root, [f"{table}: unknown split 'validation' (expected meta, train or test)"]


def _broken_manifest(path: Path) -> tuple[Path, list[str]]:
    table = make_manifest(path, classes=("widget",), n_train=1, n_good=2, n_bad=1)
    rows = _read_rows(table)
    rows[2][3] = "val"
    _write_rows(table, rows)
    return table, [f"{table}:3: unknown split 'val' (expected train or test)"]


@pytest.mark.parametrize(
    "layout, breaker",
    [
        ("btad", _broken_btad),
        ("mvtec-loco", _broken_loco),
        ("realiad", _broken_realiad),
        ("manifest", _broken_manifest),
    ],
)
def test_eval_reports_layout_problems_before_any_model(tmp_path, monkeypatch, capsys, layout, breaker) -> None:
    root, expected = breaker(tmp_path / "data")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the layout check")

    monkeypatch.setattr(WinCLIP, "__init__", no_model)
    assert _eval(layout, root, tmp_path / "out", "0", "1") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["winclip: error: invalid dataset (1 problem):", *expected]
    assert not (tmp_path / "out").exists()
