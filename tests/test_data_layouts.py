"""The layouts beside mvtec/visa/folder: BTAD, MPDD and MVTec LOCO AD (winclip.data)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image
from synthetic import make_mvtec
from synthetic_layouts import BTAD_EXTENSIONS, LOCO_VALUES, make_btad, make_loco

from winclip import WinCLIP
from winclip.cli import build_parser, main
from winclip.data import LAYOUTS, DatasetError, Sample, load_dataset, load_mask
from winclip.evaluate import sample_mask


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


def test_registry_names_every_layout_and_the_cli_offers_them() -> None:
    assert LAYOUTS == ("mvtec", "visa", "folder", "mpdd", "btad", "mvtec-loco")
    parser = build_parser()
    for layout in LAYOUTS:
        assert parser.parse_args(["eval", "--dataset", layout, "--root", "r", "--out", "o"]).dataset == layout


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
                (base / "test" / "ko" / f"{i:04d}{image_ext}", 1, "ko", (base / "ground_truth" / "ko" / f"{i:04d}{mask_ext}",))
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


# winclip eval on each new layout: results for every class, or every problem before any model


def _eval(layout: str, root: Path, out: Path, *shots: str) -> int:
    args = ["eval", "--dataset", layout, "--root", str(root), "--out", str(out), "--shots", *shots, "--seeds", "1"]
    return main([*args, "--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "8"])


SMALL = {
    "btad": lambda path: make_btad(path, classes=("01", "03"), n_train=2, n_good=2, n_bad=2),
    "mpdd": lambda path: make_mvtec(path, classes=("bracket_black", "tubes"), n_train=2, n_good=2, n_bad=2),
    "mvtec-loco": lambda path: make_loco(path, n_train=2, n_val=1, n_good=2, n_bad=3),
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


@pytest.mark.parametrize(
    "layout, breaker",
    [("btad", _broken_btad), ("mvtec-loco", _broken_loco)],
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
