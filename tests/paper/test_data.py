"""Dataset layouts, validation messages, reference sampling and masks (winclip.paper.data)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.synthetic import make_folder, make_mvtec, make_visa
from winclip.paper.data import (
    LAYOUTS,
    ClassData,
    DatasetError,
    Sample,
    load_dataset,
    load_mask,
    resize_mask,
    sample_references,
)


def _problems(layout: str, root: Path, classes: list[str] | None = None) -> list[str]:
    with pytest.raises(DatasetError) as info:
        load_dataset(layout, root, classes)
    assert str(info.value).splitlines()[1:] == info.value.problems
    return info.value.problems


def _rewrite_csv(root: Path, edit) -> Path:
    """Apply ``edit`` to the rows (header excluded) of the VisA CSV; return the CSV path."""
    table = root / "split_csv" / "1cls.csv"
    with table.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *edit(rows)])
    return table


# MVTec-AD


def test_mvtec_loads_every_class(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, n_train=5, n_good=3, n_bad=4)
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")
    (root / "readme.txt").write_text("hello")
    data = load_dataset("mvtec", root)
    assert LAYOUTS[:3] == ("mvtec", "visa", "folder")
    assert [c.name for c in data] == ["metal_nut", "widget"]
    for c in data:
        assert isinstance(c, ClassData)
        assert len(c.train_good) == 5
        assert list(c.train_good) == sorted(c.train_good)
        assert all(p.parent == root / c.name / "train" / "good" for p in c.train_good)
        assert [s.path for s in c.test] == sorted(s.path for s in c.test)
        good = [s for s in c.test if s.label == 0]
        bad = [s for s in c.test if s.label == 1]
        assert (len(good), len(bad)) == (3, 4)
        assert all(s.defect == "good" and s.mask is None for s in good)
        assert sorted(s.defect for s in bad) == ["blob", "blob", "scratch", "scratch"]
        assert all(s.mask == root / c.name / "ground_truth" / s.defect / f"{s.path.stem}_mask.png" for s in bad)


def test_mvtec_classes_filter_keeps_requested_order(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("a", "b", "c"), n_train=1, n_good=1, n_bad=1)
    assert [c.name for c in load_dataset("mvtec", root, ["c", "a"])] == ["c", "a"]
    assert [c.name for c in load_dataset("mvtec", root, "b")] == ["b"]


def test_filter_skips_problems_of_unselected_classes(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, n_train=1, n_good=1, n_bad=1)
    shutil.rmtree(root / "widget" / "train")
    assert [c.name for c in load_dataset("mvtec", root, ["metal_nut"])] == ["metal_nut"]


def test_unknown_class_lists_available(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, n_train=1, n_good=1, n_bad=1)
    assert _problems("mvtec", root, ["widget", "screw", "pill"]) == [
        f"{root}: unknown class(es) screw, pill; available: metal_nut, widget"
    ]


def test_missing_root_and_no_classes(tmp_path: Path) -> None:
    assert _problems("mvtec", tmp_path / "nope") == [f"{tmp_path / 'nope'}: dataset root does not exist"]
    (tmp_path / "license.txt").write_text("x")
    assert _problems("mvtec", tmp_path) == [f"{tmp_path}: no classes found for the mvtec layout"]
    assert _problems("folder", tmp_path) == [f"{tmp_path}: no classes found for the folder layout"]


def test_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"unknown layout 'mvtech'; expected one of {', '.join(LAYOUTS)}$"):
        load_dataset("mvtech", tmp_path)


def test_mvtec_missing_or_empty_train_good(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, n_train=2, n_good=1, n_bad=1)
    shutil.rmtree(root / "widget" / "train" / "good")
    for path in (root / "metal_nut" / "train" / "good").iterdir():
        path.unlink()
    assert _problems("mvtec", root) == [
        f"{root / 'metal_nut' / 'train' / 'good'}: no images",
        f"{root / 'widget' / 'train' / 'good'}: missing",
    ]


def test_mvtec_missing_mask(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=2)
    mask = root / "widget" / "ground_truth" / "blob" / "001_mask.png"
    mask.unlink()
    assert _problems("mvtec", root) == [f"{root / 'widget' / 'test' / 'blob' / '001.png'}: no mask; expected {mask}"]


def test_mask_of_another_size(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=1, size=(64, 48))
    mask = root / "widget" / "ground_truth" / "scratch" / "000_mask.png"
    Image.open(mask).resize((32, 32), Image.Resampling.NEAREST).save(mask)
    image = root / "widget" / "test" / "scratch" / "000.png"
    assert _problems("mvtec", root) == [f"{mask}: mask is 32x32 but its image {image} is 48x64 (WxH)"]


def test_non_image_file_named_png(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=1)
    fake = root / "widget" / "train" / "good" / "notes.png"
    fake.write_text("not an image")
    assert _problems("mvtec", root) == [f"{fake}: not a readable image"]


def test_class_without_anomalous_test_images(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=2)
    shutil.rmtree(root / "widget" / "test" / "blob")
    shutil.rmtree(root / "widget" / "test" / "scratch")
    assert _problems("mvtec", root) == [f"{root / 'widget' / 'test'}: no anomalous test images (AUROC is undefined)"]


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, n_train=1, n_good=1, n_bad=1)
    shutil.rmtree(root / "widget" / "train" / "good")
    mask = root / "metal_nut" / "ground_truth" / "scratch" / "000_mask.png"
    mask.unlink()
    fake = root / "metal_nut" / "test" / "good" / "zzz.png"
    fake.write_bytes(b"\x00" * 64)
    shutil.rmtree(root / "widget" / "test" / "good")
    problems = _problems("mvtec", root)
    assert problems == [
        f"{root / 'metal_nut' / 'test' / 'scratch' / '000.png'}: no mask; expected {mask}",
        f"{fake}: not a readable image",
        f"{root / 'widget' / 'train' / 'good'}: missing",
        f"{root / 'widget' / 'test'}: no good test images (AUROC is undefined)",
    ]


def test_error_message_has_one_line_per_problem(tmp_path: Path) -> None:
    error = DatasetError(["a: x", "b: y"])
    assert isinstance(error, ValueError)
    assert error.problems == ["a: x", "b: y"]
    assert str(error) == "invalid dataset (2 problems):\na: x\nb: y"
    assert str(DatasetError(["a: x"])) == "invalid dataset (1 problem):\na: x"


# VisA


def test_visa_loads_non_square(tmp_path: Path) -> None:
    root = make_visa(tmp_path, n_train=5, n_good=3, n_bad=2)
    data = load_dataset("visa", root)
    assert [c.name for c in data] == ["candle", "pcb1"]
    for c in data:
        assert len(c.train_good) == 5
        assert list(c.train_good) == sorted(c.train_good)
        labels = [s.label for s in c.test]
        assert (labels.count(0), labels.count(1)) == (3, 2)
        bad = [s for s in c.test if s.label == 1]
        assert len(bad) == 2
        for s in bad:
            assert s.defect == "anomaly"
            assert s.mask == root / c.name / "Data" / "Masks" / "Anomaly" / s.path.name
            assert load_mask(s.mask, (64, 96)).any()
    assert [c.name for c in load_dataset("visa", root, ["pcb1"])] == ["pcb1"]


def test_visa_row_pointing_at_missing_file(tmp_path: Path) -> None:
    root = make_visa(tmp_path, classes=("pcb1",), n_train=2, n_good=1, n_bad=1)
    image = root / "pcb1" / "Data" / "Images" / "Normal" / "0000.png"
    image.unlink()
    mask = root / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png"
    mask.unlink()
    table = root / "split_csv" / "1cls.csv"
    assert _problems("visa", root) == [
        f"{table}:2: image file {image} does not exist",
        f"{table}:5: mask file {mask} does not exist",
    ]


def test_visa_bad_rows(tmp_path: Path) -> None:
    root = make_visa(tmp_path, classes=("pcb1",), n_train=1, n_good=1, n_bad=2)

    def edit(rows: list[list[str]]) -> list[list[str]]:
        rows[0][2] = "good"  # unknown label
        rows[1][1] = "val"  # unknown split
        rows[2][4] = ""  # anomaly without mask
        return rows

    table = _rewrite_csv(root, edit)
    assert _problems("visa", root) == [
        f"{table}:2: unknown label 'good' (expected normal or anomaly)",
        f"{table}:3: unknown split 'val' (expected train or test)",
        f"{table}:4: anomaly row has no mask",
        f"{table} (object 'pcb1'): no normal train rows",
        f"{table} (object 'pcb1'): no good test images (AUROC is undefined)",
    ]


def test_visa_missing_columns_and_csv(tmp_path: Path) -> None:
    root = make_visa(tmp_path, classes=("pcb1",), n_train=1, n_good=1, n_bad=1)
    table = root / "split_csv" / "1cls.csv"
    table.write_text("object,split,image\npcb1,train,x.png\n")
    assert _problems("visa", root) == [f"{table}: missing column(s) label, mask"]
    table.unlink()
    assert _problems("visa", root) == [f"{table}: missing"]


def test_visa_mask_size_mismatch(tmp_path: Path) -> None:
    root = make_visa(tmp_path, classes=("pcb1",), n_train=1, n_good=1, n_bad=1)
    mask = root / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png"
    Image.open(mask).resize((64, 64), Image.Resampling.NEAREST).save(mask)
    image = root / "pcb1" / "Data" / "Images" / "Anomaly" / "000.png"
    assert _problems("visa", root) == [f"{mask}: mask is 64x64 but its image {image} is 96x64 (WxH)"]


# Folder layout


def test_folder_loads_classes_defect_types_and_both_mask_names(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_ref=3, n_good=2, n_bad=4)
    data = load_dataset("folder", root)
    assert [c.name for c in data] == ["gadget", "widget"]
    for c in data:
        assert [p.suffix for p in c.train_good] == [".JPG"] * 3
        bad = [s for s in c.test if s.label == 1]
        assert len(bad) == 4
        assert sorted(s.defect for s in bad) == ["blob", "blob", "scratch", "scratch"]
        assert sorted(s.mask.name for s in bad) == [
            "blob_001_mask.png",
            "blob_003_mask.png",
            "scratch_000.png",
            "scratch_002.png",
        ]
        assert all(s.mask.name.startswith(s.path.stem) for s in bad)
        assert [s.label for s in c.test].count(0) == 2


def test_folder_root_is_one_class(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("bottle",), n_ref=1, n_good=1, n_bad=1)
    (data,) = load_dataset("folder", tmp_path / "bottle")
    assert data.name == "bottle"
    assert [s.label for s in data.test] == [1, 0]


def test_folder_without_masks_or_references(tmp_path: Path) -> None:
    root = make_folder(tmp_path, classes=("widget",), n_ref=2, n_good=2, n_bad=2)
    shutil.rmtree(root / "widget" / "masks")
    shutil.rmtree(root / "widget" / "reference")
    flat = root / "widget" / "defect" / "odd.png"
    shutil.copy(root / "widget" / "good" / "000.png", flat)
    (data,) = load_dataset("folder", root)
    assert data.train_good == ()
    bad = [s for s in data.test if s.label == 1]
    assert len(bad) == 3
    assert all(s.mask is None for s in bad)
    assert [s.defect for s in bad if s.path == flat] == ["anomaly"]
    with pytest.raises(DatasetError) as info:
        sample_references(data, 1, seed=0)
    assert info.value.problems == [
        (
            "widget: 1 references requested but only 0 available"
            " (zero-shot only; put good images in the class's reference/ folder)"
        )
    ]


def test_folder_mask_problems(tmp_path: Path) -> None:
    root = make_folder(tmp_path, classes=("widget",), n_ref=1, n_good=1, n_bad=3)
    masks = root / "widget" / "masks"
    (masks / "blob_001_mask.png").unlink()
    orphan = masks / "stray.png"
    shutil.copy(masks / "scratch_000.png", orphan)
    shutil.copy(masks / "scratch_002.png", masks / "scratch_002_mask.bmp")
    shutil.rmtree(root / "widget" / "reference")
    (root / "widget" / "reference").mkdir()
    defect = root / "widget" / "defect"
    assert _problems("folder", root) == [
        f"{root / 'widget' / 'reference'}: no images",
        f"{defect / 'blob' / 'blob_001.png'}: no mask in {masks} (expected blob_001.<ext> or blob_001_mask.<ext>)",
        f"{defect / 'scratch' / 'scratch_002.png'}: several masks match: scratch_002.png, scratch_002_mask.bmp",
        f"{masks / 'scratch_002.png'}: mask matches no defect image",
        f"{masks / 'scratch_002_mask.bmp'}: mask matches no defect image",
        f"{orphan}: mask matches no defect image",
    ]


def test_folder_masks_mirroring_defect_subfolders(tmp_path: Path) -> None:
    root = make_folder(tmp_path, classes=("widget",), n_ref=1, n_good=1, n_bad=2)
    masks = root / "widget" / "masks"
    # the same stem under two defect types, told apart by masks/<type>/
    pairs = (("scratch", "scratch_000.png", "scratch_000.png"), ("blob", "blob_001.png", "blob_001_mask.png"))
    for defect, image, mask in pairs:
        (masks / defect).mkdir()
        (masks / mask).rename(masks / defect / "x.png")
        (root / "widget" / "defect" / defect / image).rename(root / "widget" / "defect" / defect / "x.png")
    (data,) = load_dataset("folder", root)
    bad = [s for s in data.test if s.label == 1]
    assert [(s.defect, s.mask) for s in bad] == [
        ("blob", masks / "blob" / "x.png"),
        ("scratch", masks / "scratch" / "x.png"),
    ]


# Reference sampling


def _class_with(n: int) -> ClassData:
    return ClassData("widget", tuple(Path(f"{i:03d}.png") for i in range(n)), ())


def test_sample_references_reproducible_and_without_replacement() -> None:
    data = _class_with(20)
    first = sample_references(data, 8, seed=3)
    assert first == sample_references(data, 8, seed=3)
    assert first != sample_references(data, 8, seed=4)
    assert len(set(first)) == 8
    assert set(first) <= set(data.train_good)
    assert sample_references(data, 4, seed=3) == first[:4]
    assert sorted(sample_references(data, 20, seed=0)) == list(data.train_good)


def test_sample_references_bad_k() -> None:
    with pytest.raises(DatasetError) as info:
        sample_references(_class_with(3), 4, seed=0)
    assert info.value.problems == ["widget: 4 references requested but only 3 available"]
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        sample_references(_class_with(3), 0, seed=0)


# Masks


def test_load_mask(tmp_path: Path) -> None:
    assert load_mask(None, (3, 5)).shape == (3, 5)
    assert load_mask(None, (3, 5)).dtype == bool
    assert not load_mask(None, (3, 5)).any()
    expected = np.zeros((4, 6), dtype=bool)
    expected[1:3, 2:5] = True
    Image.fromarray(expected.astype(np.uint8) * 7).save(tmp_path / "l.png")
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[expected, 0] = 1
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, np.full((4, 6), 255, dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for name in ("l.png", "rgb.png", "rgba.png"):
        mask = load_mask(tmp_path / name, (4, 6))
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, expected)
    with pytest.raises(DatasetError, match=r"l.png: mask is 6x4 but 4x6 was expected \(WxH\)"):
        load_mask(tmp_path / "l.png", (6, 4))


def test_synthetic_masks_are_exact(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, classes=("widget",), n_train=1, n_good=1, n_bad=2, size=(40, 56))
    (data,) = load_dataset("mvtec", root)
    bad = [s for s in data.test if s.label == 1]
    assert len(bad) == 2
    for s in bad:
        raw = np.asarray(Image.open(s.mask))
        assert set(np.unique(raw)) == {0, 255}
        mask = load_mask(s.mask, (40, 56))
        painted = np.asarray(Image.open(s.path))[mask]
        assert (painted == painted[0]).all()  # one flat defect colour inside the mask


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    files = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_mvtec(tmp_path / name, classes=("widget",), n_train=1, n_good=1, n_bad=1, seed=seed)
        files[name] = (tmp_path / name / "widget" / "test" / "scratch" / "000.png").read_bytes()
    assert files["a"] == files["b"]
    assert files["a"] != files["c"]


def test_resize_mask_nearest() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((5, 7)) > 0.5
    up = resize_mask(mask, (15, 14))
    assert up.dtype == bool
    np.testing.assert_array_equal(up, mask.repeat(3, axis=0).repeat(2, axis=1))
    np.testing.assert_array_equal(resize_mask(up, (5, 7)), mask)
    assert resize_mask(mask, (240, 240)).shape == (240, 240)


def test_sample_is_a_frozen_record() -> None:
    sample = Sample(Path("a.png"), 1, "crack", Path("a_mask.png"))
    with pytest.raises(AttributeError):
        sample.label = 0  # type: ignore[misc]
