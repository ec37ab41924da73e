"""report.html of `winclip eval` and `winclip report RUN_DIR` (tiny random model): the curves integrate to
results.csv, the gallery holds the worst mistakes, the report is made again without any model, byte for byte,
and a run whose dataset moved keeps its image-level parts with a one-line note; headless Chromium renders it
(screenshot → docs/report.png with WINCLIP_UPDATE_DOCS=1)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY
from helpers.synthetic import make_folder, make_mvtec
from winclip.backbones.openclip import Backbone
from winclip.cli import main
from winclip.cli import report as report_command
from winclip.metrics.curves import PLOT_CELLS
from winclip.metrics.pixel import PRO_MAX_FPR
from winclip.model import WinCLIP
from winclip.paper.feature_cache import FeatureCache
from winclip.paper.report.collect import GALLERY_SIZE, collect
from winclip.paper.run_record import PROTOTYPES_FILE, RUN_FILE, load_run

pytestmark = pytest.mark.xdist_group("report")  # its module fixtures are made once, on one worker

ROOT = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "4"]
CHROMIUM = Path("/usr/bin/chromium")
CLASSES = ("widget", "metal_nut")


def _eval(root: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--dataset", "mvtec", "--root", str(root), "--out", str(out), *TINY_ARGS, *extra])


def _results(out: Path) -> dict[tuple[str, int, int | None], dict[str, float]]:
    rows: dict[tuple[str, int, int | None], dict[str, float]] = {}
    with (out / "results.csv").open(newline="") as handle:
        for r in csv.DictReader(handle):
            key = (r["class"], int(r["shots"]), None if r["seed"] == "" else int(r["seed"]))
            rows.setdefault(key, {})[r["metric"]] = float(r["value"])
    return rows


def _sections(page: str) -> dict[str, str]:
    """Class name → the HTML of its section."""
    found = re.findall(r'<section class="class" id="class-\d+" data-class="([^"]+)">(.*?)</section>', page, re.S)
    return dict(found)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """One finished eval: two classes, 96x128 photos, shots 0 and 1, two seeds."""
    base = tmp_path_factory.mktemp("report")
    root = make_mvtec(base / "data", classes=CLASSES, size=(96, 128))
    assert _eval(root, base / "out", "--shots", "0", "1", "--seeds", "2") == 0
    return root, base / "out"


def test_eval_writes_the_report_and_what_it_needs(run):
    root, out = run
    page = (out / "report.html").read_text(encoding="utf-8")
    record = load_run(out)
    assert record.dataset == "mvtec" and record.root == root.absolute() and record.classes == tuple(sorted(CLASSES))
    assert record.grid == (8, 8) and record.resolution == 240 and record.random_weights
    assert (
        record.feature_cache.parent == (out / "cache").absolute() and (record.feature_cache / "settings.json").is_file()
    )
    assert sorted(record.references) == sorted((c, k, s) for c in CLASSES for k, s in ((0, None), (1, 0), (1, 1)))
    assert all(len(refs) == k for (_, k, _), refs in record.references.items())
    assert (out / PROTOTYPES_FILE).is_file()
    sections = _sections(page)
    assert sorted(sections) == sorted(CLASSES)
    results = _results(out)
    for cls, html in sections.items():
        assert html.count('class="plot curves"') == 1 and html.count('class="plot histograms"') == 1
        assert html.count('<div class="gallery"') == 2  # 0-shot and 1-shot seed 0
        assert html.count("<figure") == 2 * 2 * GALLERY_SIZE
        auroc = f"<td>{100 * results[(cls, 0, None)]['image_auroc']:.1f}"  # then the paper's figure, if it has one
        assert re.search(f"<tr><th>AUROC</th>{re.escape(auroc)}[ <]", html)
    assert "RANDOM WEIGHTS" in page and "<script" not in page and "http" not in page
    assert "summary.md" in page and "Classification (Table 1 layout)" in page


def test_curves_integrate_to_the_metrics_of_results_csv(run):
    _, out = run
    results = _results(out)
    exact = collect(out, cells=None)  # every curve point kept
    thinned = collect(out)
    assert [s.name for s in exact.sections] == sorted(CLASSES)
    checked = 0
    for section, thin in zip(exact.sections, thinned.sections, strict=True):
        assert [(s.row.shots, s.row.seed) for s in section.settings] == [(0, None), (1, 0)]
        for setting, thin_setting in zip(section.settings, thin.settings, strict=True):
            metrics = results[(section.name, setting.row.shots, setting.row.seed)]
            assert _trapezoid(setting.roc.x, setting.roc.y) == pytest.approx(metrics["image_auroc"], abs=1e-12)
            assert float(np.sum(np.diff(setting.pr.x) * setting.pr.y[1:])) == pytest.approx(
                metrics["image_aupr"], abs=1e-12
            )
            pixel = setting.pixel
            assert pixel is not None
            # the same sweep as evaluate: identical floats, not merely close
            assert pixel.metrics == {k: metrics[k] for k in ("pixel_auroc", "pixel_pro", "pixel_f1max")}
            assert _trapezoid(pixel.roc.x, pixel.roc.y) == pytest.approx(metrics["pixel_auroc"], abs=1e-12)
            assert _trapezoid(pixel.pro.x, pixel.pro.y) / PRO_MAX_FPR == pytest.approx(metrics["pixel_pro"], abs=1e-12)
            plotted = thin_setting.pixel
            assert plotted.metrics == pixel.metrics and plotted.roc.x.size < pixel.roc.x.size
            assert abs(_trapezoid(plotted.roc.x, plotted.roc.y) - metrics["pixel_auroc"]) <= 1 / PLOT_CELLS
            assert abs(_trapezoid(plotted.pro.x, plotted.pro.y) / PRO_MAX_FPR - metrics["pixel_pro"]) <= 1 / PLOT_CELLS
            checked += 1
    assert checked == 4 and exact.notes == () and thinned.notes == ()


def brute_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """F1 of `score >= t` at every distinct score, highest t first; the first best (the highest t on ties)."""
    best_t, best_f1 = None, -1.0
    for t in sorted(set(scores.tolist()), reverse=True):
        tp = int(((scores >= t) & (labels == 1)).sum())
        f1 = 2 * tp / (int((scores >= t).sum()) + int((labels == 1).sum()))
        if f1 > best_f1:
            best_t, best_f1 = t, f1
    return best_t


def test_gallery_shows_the_worst_mistakes_at_the_f1_threshold(run):
    root, out = run
    scores = np.load(out / "scores.npz")
    data = collect(out)
    items = 0
    for section in data.sections:
        for setting in section.settings:
            row = setting.row
            sel = (scores["class"] == section.name) & (scores["shots"] == row.shots)
            sel &= scores["seed"] == (-1 if row.seed is None else row.seed)
            s, y, paths = scores["score"][sel], scores["label"][sel], scores["path"][sel]
            assert setting.threshold == brute_f1_threshold(s, y)
            good = [str(p) for _, p in sorted(zip(-s[y == 0], paths[y == 0], strict=True))][:GALLERY_SIZE]
            bad = [str(p) for _, p in sorted(zip(s[y == 1], paths[y == 1], strict=True))][:GALLERY_SIZE]
            assert [i.path for i in setting.false_positives] == good
            assert [i.path for i in setting.false_negatives] == bad
            for item in (*setting.false_positives, *setting.false_negatives):
                photo = Image.open(root / item.path)
                assert item.photo.size == item.overlay.size == (128, 96) == photo.size  # under the thumbnail side
                assert np.array_equal(np.asarray(item.photo), np.asarray(photo.convert("RGB")))
                over = np.asarray(item.overlay)
                white = (over == 255).all(axis=-1)
                assert white.any() == bool(item.label)  # the ground truth's outline, on defective images only
                assert np.abs(over.astype(int) - np.asarray(item.photo)).mean() > 5  # the heat map is blended in
                items += 1
    assert items == 2 * 2 * 2 * GALLERY_SIZE


def test_report_command_makes_the_same_page_without_any_model(run, monkeypatch, capsys, tmp_path):
    _, out = run
    first = (out / "report.html").read_bytes()

    def forbidden(*args, **kwargs):
        raise AssertionError("winclip report built a model or encoded an image")

    monkeypatch.setattr(Backbone, "__init__", forbidden)
    monkeypatch.setattr(WinCLIP, "__init__", forbidden)
    monkeypatch.setattr(FeatureCache, "save", forbidden)
    monkeypatch.setattr("winclip.backbones.openclip.load_clip", forbidden)
    assert main(["report", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip() == f"report: 2 classes; wrote {out / 'report.html'}"
    assert (out / "report.html").read_bytes() == first
    assert main(["report", str(out), "--out", str(tmp_path / "copy.html")]) == 0
    assert (tmp_path / "copy.html").read_bytes() == first
    assert main(["report", str(out), "--out", str(tmp_path / "none.html"), "--gallery", "0"]) == 0
    sections = _sections((tmp_path / "none.html").read_text())
    assert len(sections) == 2 and all("<figure" not in s and "No gallery" not in s for s in sections.values())


def test_moved_dataset_keeps_image_level_parts_with_one_note(tmp_path, capsys):
    root = make_mvtec(tmp_path / "data", classes=("widget",))
    assert _eval(root, tmp_path / "out", "--shots", "0", "1", "--seeds", "1") == 0
    whole = _sections((tmp_path / "out" / "report.html").read_text())["widget"]
    root.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"winclip: warning: dataset not found (moved?) at {root}: image-level parts only; "
        "the pixel curves and the gallery need its images and masks"
    ]
    page = (tmp_path / "out" / "report.html").read_text()
    assert err[0].removeprefix("winclip: warning: ").replace("'", "&#x27;") in page
    section = _sections(page)["widget"]
    assert section.count('class="plot curves"') == 1 and section.count('class="plot histograms"') == 1
    assert "<figure" not in section and section.count("No gallery") == 2
    assert section.split("<img")[0] == whole.split("<img")[0]  # the same tables
    data = collect(tmp_path / "out")
    results = _results(tmp_path / "out")
    for setting in data.sections[0].settings:
        assert setting.pixel is None
        key = ("widget", setting.row.shots, setting.row.seed)
        assert _trapezoid(setting.roc.x, setting.roc.y) == pytest.approx(results[key]["image_auroc"], abs=1e-12)


def test_tiles_at_original_size_and_a_class_without_masks(tmp_path):
    root = make_folder(tmp_path / "data", size=(64, 96))
    shutil.rmtree(root / "gadget" / "masks")
    args = ("--shots", "0", "1", "--seeds", "1", "--resize", "tile", "--eval-resolution", "original")
    assert (
        main(["eval", "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "out"), *TINY_ARGS, *args])
        == 0
    )
    results = _results(tmp_path / "out")
    data = collect(tmp_path / "out", cells=None)
    assert data.notes == () and [s.name for s in data.sections] == ["gadget", "widget"]
    for section in data.sections:
        for setting in section.settings:
            metrics = results[(section.name, setting.row.shots, setting.row.seed)]
            assert setting.rescored and len(setting.false_negatives) == GALLERY_SIZE
            if section.name == "gadget":  # image metrics only; the gallery without outlines
                assert setting.pixel is None and "pixel_auroc" not in metrics
                assert not any((np.asarray(i.overlay) == 255).all(axis=-1).any() for i in setting.false_negatives)
            else:
                assert setting.pixel.metrics == {k: metrics[k] for k in ("pixel_auroc", "pixel_pro", "pixel_f1max")}
                assert _trapezoid(setting.pixel.pro.x, setting.pixel.pro.y) / PRO_MAX_FPR == pytest.approx(
                    metrics["pixel_pro"], abs=1e-12
                )


def test_changed_files_and_old_runs_are_noted(run, tmp_path, capsys):
    root, out = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("cache"))
    record = json.loads((copy / RUN_FILE).read_text())
    data = tmp_path / "data"
    shutil.copytree(root, data)
    record["root"] = record["paths_root"] = str(data)
    (copy / RUN_FILE).write_text(json.dumps(record))
    changed = data / "widget" / "test" / "good" / "001.png"
    Image.fromarray(255 - np.asarray(Image.open(changed).convert("RGB"))).save(changed)
    report = collect(copy)
    assert len(report.notes) == 1 and report.notes[0].startswith("widget: 1 test images of the run are gone")
    by_name = {s.name: s for s in report.sections}
    assert all(s.pixel is None for s in by_name["widget"].settings)
    assert all(s.pixel is not None for s in by_name["metal_nut"].settings)

    mask = data / "metal_nut" / "ground_truth" / "blob" / "001_mask.png"
    mask.unlink()  # the dataset no longer validates: image-level parts only
    report = collect(copy)
    assert report.notes == (
        f"dataset changed ({data / 'metal_nut' / 'test' / 'blob' / '001.png'}: no mask; expected {mask}) at {data}: "
        "image-level parts only; the pixel curves and the gallery need its images and masks",
    )
    assert all(not s.rescored for section in report.sections for s in section.settings)

    (copy / RUN_FILE).unlink()  # a run from before run.json: image-level parts, one note
    assert main(["report", str(copy)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"winclip: warning: {copy / RUN_FILE}: missing (written by winclip eval; rerun it to add it, "
                   "rows are reused): image-level parts only"]  # fmt: skip
    assert len(_sections((copy / "report.html").read_text())) == 2


def test_report_of_a_folder_that_is_no_run_is_a_one_line_error(tmp_path, capsys):
    assert report_command.GALLERY == GALLERY_SIZE
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"winclip: error: {tmp_path / 'results.csv'}: missing; is {tmp_path} a finished winclip eval run?"]
    with pytest.raises(SystemExit) as refused:  # refused by argparse at the edge (issue 22), its one error line
        main(["report", str(tmp_path), "--gallery", "-1"])
    assert refused.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].endswith("argument --gallery: must be from 0 to 1,000, got -1")
    )


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs Debian's chromium)")
def test_headless_chromium_renders_every_section(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    _, out = run
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        sections = page.locator("section.class")
        assert sections.count() == len(CLASSES)
        for i in range(sections.count()):
            section = sections.nth(i)
            for kind in ("curves", "histograms"):
                assert section.locator(f"img.{kind}").count() == 1
            assert section.locator(".gallery").count() == 2
            assert section.locator(".gallery figure").count() == 2 * 2 * GALLERY_SIZE
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert page.evaluate("document.images.length") > 2 * 2 * 2 * 2 * GALLERY_SIZE and broken == 0
        shot = tmp_path / "report.png"
        sections.first.screenshot(path=str(shot))
        browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 800 and pixels.std() > 20  # not blank
    if os.environ.get("WINCLIP_UPDATE_DOCS") == "1":  # refresh the README's screenshot on request only
        palette = (
            Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        )
        palette.save(ROOT / "docs" / "report.png", optimize=True)  # a third of the bytes, no visible change


def test_page_pictures_are_inline_and_decodable(run):
    _, out = run
    page = (out / "report.html").read_text()
    uris = re.findall(r'src="data:image/(svg\+xml|png|jpeg);base64,([^"]+)"', page)
    assert len(uris) == page.count("<img ") and len(uris) > 2 * 2 * 2 * GALLERY_SIZE
    for kind, payload in uris:
        raw = base64.b64decode(payload)
        if kind == "svg+xml":
            assert raw.startswith(b"<?xml") and b"<svg" in raw
        else:
            assert Image.open(io.BytesIO(raw)).size[0] > 0
