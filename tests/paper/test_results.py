"""Report writing and the paper lookup (winclip.paper.results)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from winclip.paper.results import (
    METRICS,
    PaperValue,
    RowResult,
    class_mean,
    format_cell,
    paper_table,
    paper_value,
    seed_values,
    summary_markdown,
    write_results_csv,
    write_scores,
)

SHARED_CSV = Path("/work/shared/paper/winclip_per_class.csv")
MVTEC = [
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
]


def _row(cls: str, shots: int, seed: int | None, value: float, n: int = 4) -> RowResult:
    return RowResult(
        cls,
        shots,
        seed,
        {m: value for m in METRICS},
        tuple(f"{cls}/{i}.png" for i in range(n)),
        tuple(i % 2 for i in range(n)),
        tuple("good" if i % 2 == 0 else "cut" for i in range(n)),
        tuple(value + i / 10 for i in range(n)),
        tuple(value / 2 + i / 10 for i in range(n)),
        () if shots == 0 else (f"{cls}/train/{seed}.png",),
    )


def test_paper_table_ships_in_the_package():
    table = paper_table()
    assert table[("mvtec", "image_auroc", "bottle", 0)] == PaperValue(99.2, 0.0)
    assert table[("mvtec", "image_auroc", "mean", 1)] == PaperValue(93.1, 2.0)
    assert table[("visa", "pixel_auroc", "mean", 4)] == PaperValue(97.2, 0.2)
    assert not any(k[0] == "folder" for k in table)
    if SHARED_CSV.is_file():  # the packaged copy is the shared file, WinCLIP rows only
        with SHARED_CSV.open() as handle:
            rows = [r for r in csv.DictReader(handle) if r["method"] in ("WinCLIP", "WinCLIP+")]
        assert len(rows) == len(table) == 6 * 4 * (16 + 13)


def test_paper_mean_for_the_full_set_or_a_subset():
    table = paper_table()
    assert paper_value(table, "mvtec", "pixel_pro", "mean", 2, MVTEC) == table[("mvtec", "pixel_pro", "mean", 2)]
    sub = paper_value(table, "mvtec", "image_auroc", "mean", 0, ["bottle", "cable"])
    assert sub == PaperValue(pytest.approx((99.2 + 86.5) / 2), None)
    assert paper_value(table, "mvtec", "image_auroc", "mean", 0, ["bottle", "widget"]) is None
    assert paper_value(table, "mvtec", "image_auroc", "widget", 0) is None
    assert paper_value(table, "mvtec", "image_auroc", "cable", 8) is None


def test_format_cell():
    assert format_cell([0.9, 0.92], PaperValue(93.1, 2.0)) == "91.0 ± 1.0 (93.1 ± 2.0, -2.1)"
    assert format_cell([0.9], PaperValue(91.8, 0.0)) == "90.0 (91.8, -1.8)"
    assert format_cell([0.5, 0.7], None) == "60.0 ± 10.0"
    assert format_cell([], None) == "n/a"


def test_seed_values_average_classes_per_seed():
    rows = [
        _row("a", 1, 0, 0.5),
        _row("b", 1, 0, 0.7),
        _row("a", 1, 1, 0.6),
        _row("b", 1, 1, 1.0),
        _row("a", 0, None, 0.3),
    ]
    assert seed_values(rows, "image_auroc", "mean", 1) == pytest.approx([0.6, 0.8])
    assert seed_values(rows, "image_auroc", "a", 1) == [0.5, 0.6]
    assert seed_values(rows, "image_auroc", "mean", 0) == [0.3]


def test_csv_and_scores_round_trip(tmp_path):
    rows = [_row("a", 0, None, 0.25), _row("a", 1, 3, 0.5, n=3), _row("b", 1, 3, 0.7), _row("b", 1, 4, 0.9)]
    del rows[1].metrics["pixel_pro"]
    write_results_csv(tmp_path / "r.csv", "mvtec", rows)
    with (tmp_path / "r.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 6 + 5 + 6 + 6
    assert lines[0] == {
        "dataset": "mvtec",
        "class": "a",
        "shots": "0",
        "seed": "",
        "metric": "image_auroc",
        "value": "0.25",
        "class_mean": "0.25",
        "class_mean_seed_std": "0.0",
    }
    assert {(r["seed"], r["metric"]) for r in lines[6:11]} == {("3", m) for m in METRICS if m != "pixel_pro"}
    by_key = {(r["class"], r["seed"], r["metric"]): r for r in lines}
    # 1-shot image AUROC: seed 3 over a and b = 0.6, seed 4 over b alone = 0.9; their std 0.15
    assert float(by_key[("a", "3", "image_auroc")]["class_mean"]) == pytest.approx(0.6)
    assert float(by_key[("b", "4", "image_auroc")]["class_mean"]) == pytest.approx(0.9)
    assert float(by_key[("b", "3", "image_auroc")]["class_mean_seed_std"]) == pytest.approx(0.15)
    assert float(by_key[("b", "3", "pixel_pro")]["class_mean"]) == pytest.approx(0.7)  # a has no PRO
    write_scores(tmp_path / "s.npz", rows)
    scores = np.load(tmp_path / "s.npz")  # allow_pickle is False by default: no object arrays
    assert list(scores["seed"]) == [-1] * 4 + [3] * 3 + [3] * 4 + [4] * 4
    assert list(scores["path"]) == [p for r in rows for p in r.paths]
    np.testing.assert_array_equal(scores["score"], np.array([v for r in rows for v in r.scores]))
    assert RowResult.from_json(rows[1].to_json()) == rows[1]


def test_summary_has_paper_columns_for_mvtec_only():
    rows = [_row(c, k, s, 0.9) for c in MVTEC for k, seeds in ((0, [None]), (1, [0, 1])) for s in seeds]
    text = summary_markdown("mvtec", rows, [("backbone", "tiny")], ["note"])
    assert "| 0-shot WinCLIP | 90.0 (91.8, -1.8) | 90.0 (96.5, -6.5) | 90.0 (92.9, -2.9) |" in text
    assert "| 1-shot WinCLIP+ | 90.0 ± 0.0 (95.2 ± 0.5, -5.2) | 90.0 ± 0.0 (87.1 ± 1.2, +2.9) |" in text
    assert "| bottle | 90.0 (99.2, -9.2) | 90.0 ± 0.0 (98.2 ± 0.9, -8.2) |" in text
    assert "| bottle | 1 | 1 | bottle/train/1.png |" in text
    assert "- note" in text and "| backbone | tiny |" in text
    plain = summary_markdown("folder", [_row("x", 0, None, 0.9)], [])
    assert (
        "| 0-shot WinCLIP | 90.0 | 90.0 | 90.0 |" in plain
        and "(" not in plain.split("## Per class")[1].split("## References")[0]
    )


def test_a_mean_rows_plus_minus_is_the_mean_of_the_per_class_stds():
    """The paper's mean ±, not the std over seeds of the class mean (here 0: the classes' errors cancel)."""
    rows = [_row("a", 1, 0, 0.5), _row("a", 1, 1, 0.7), _row("b", 1, 0, 0.9), _row("b", 1, 1, 0.7)]
    assert class_mean(rows, "image_auroc", 1) == pytest.approx((0.7, 0.1))
    assert np.std(seed_values(rows, "image_auroc", "mean", 1)) == pytest.approx(0.0)
    text = summary_markdown("folder", rows, [])
    assert "| mean | 70.0 ± 10.0 |" in text and "| 1-shot WinCLIP+ | 70.0 ± 10.0 | 70.0 ± 10.0 |" in text
    assert class_mean([_row("a", 0, None, 0.4), _row("b", 0, None, 0.6)], "pixel_pro", 0) == (0.5, None)
