"""`winclip eval` end to end on the three layouts, against independent recomputations (tiny random model)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

import winclip.paper.evaluate as ev
from helpers import TINY, make_model
from helpers.synthetic import make_folder, make_mvtec, make_visa
from winclip import WinCLIP
from winclip.cli import main
from winclip.images import file_sha256, load_image
from winclip.method.zero_shot import upsample
from winclip.paper.data import load_dataset, sample_references

pytestmark = pytest.mark.xdist_group("evaluate")  # its module fixtures are made once, on one worker

MAKERS = {"mvtec": make_mvtec, "visa": make_visa, "folder": make_folder}


TINY_ARGS = ["--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "4"]


def _eval(root: Path, out: Path, dataset: str, *extra: str) -> int:
    return main(["eval", "--dataset", dataset, "--root", str(root), "--out", str(out), *TINY_ARGS, *extra])


def _results(out: Path, column: str = "value") -> dict[tuple[str, int, str, str], float]:
    with (out / "results.csv").open(newline="") as handle:
        return {(r["class"], int(r["shots"]), r["seed"], r["metric"]): float(r[column]) for r in csv.DictReader(handle)}


def _f1max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return float(f1.max())


def _mask(path: Path | None, size: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Ground truth read with PIL directly, nearest-neighbour resized to ``target`` (H, W)."""
    if path is None:
        return np.zeros(target, dtype=bool)
    image = Image.open(path).convert("L")
    assert image.size == (size[1], size[0])
    return np.asarray(image.resize((target[1], target[0]), Image.Resampling.NEAREST)) > 0


@pytest.fixture(scope="module", params=sorted(MAKERS))
def finished(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """One complete run per layout: shots 0 and 1, two seeds."""
    base = tmp_path_factory.mktemp(request.param)
    root = MAKERS[request.param](base / "data")
    assert _eval(root, base / "out", request.param, "--shots", "0", "1", "--seeds", "2") == 0
    return request.param, root, base / "out"


def test_results_equal_sklearn_on_saved_scores(finished):
    dataset, root, out = finished
    classes = load_dataset(dataset, root)
    results = _results(out)
    scores = np.load(out / "scores.npz")
    assert not scores["score"].dtype.hasobject
    assert sorted({k[1:3] for k in results}) == [(0, ""), (1, "0"), (1, "1")]
    checked = 0
    for data in classes:
        for shots, seed in ((0, -1), (1, 0), (1, 1)):
            sel = (scores["class"] == data.name) & (scores["shots"] == shots) & (scores["seed"] == seed)
            assert sel.sum() == len(data.test)
            assert sorted(scores["path"][sel]) == sorted(s.path.relative_to(root).as_posix() for s in data.test)
            y, s = scores["label"][sel], scores["score"][sel]
            key = (data.name, shots, "" if seed < 0 else str(seed))
            assert results[(*key, "image_auroc")] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert results[(*key, "image_aupr")] == pytest.approx(average_precision_score(y, s), abs=1e-12)
            assert results[(*key, "image_f1max")] == pytest.approx(_f1max(y, s), abs=1e-12)
            if shots == 0:  # the zero-shot score is ascore0(F^I) itself
                np.testing.assert_array_equal(scores["zero_shot"][sel], s)
            checked += 1
    assert checked == 3 * len(classes) == 6


def test_summary_shows_recomputed_means(finished):
    """A mean row's ± is the mean over classes of the per-class stds (the paper's); results.csv keeps the
    per-seed class means and their std over seeds, the other figure."""
    dataset, root, out = finished
    results, means, spread = _results(out), _results(out, "class_mean"), _results(out, "class_mean_seed_std")
    summary = (out / "summary.md").read_text()
    assert "RANDOM WEIGHTS" in summary and "the mean over classes of the per-class stds" in summary
    table1 = summary.split("## Classification")[1].split("## Segmentation")[0]
    row0 = next(line for line in table1.splitlines() if line.startswith("| 0-shot WinCLIP |"))
    row1 = next(line for line in table1.splitlines() if line.startswith("| 1-shot WinCLIP+ |"))
    classes = sorted({k[0] for k in results})
    assert len(classes) == 2
    checked = 0
    for column, metric in enumerate(("image_auroc", "image_aupr", "image_f1max")):
        zero = np.mean([results[(c, 0, "", metric)] for c in classes])
        assert row0.split("|")[2 + column].strip().startswith(f"{100 * zero:.1f}")
        assert means[(classes[0], 0, "", metric)] == pytest.approx(zero, abs=1e-12)
        per_class = [[results[(c, 1, str(s), metric)] for s in (0, 1)] for c in classes]
        mean = np.mean(per_class)
        class_std = np.mean([np.std(v) for v in per_class])
        assert row1.split("|")[2 + column].strip().startswith(f"{100 * mean:.1f} ± {100 * class_std:.1f}")
        per_seed = [means[(classes[1], 1, str(s), metric)] for s in (0, 1)]
        assert per_seed == pytest.approx(np.mean(per_class, axis=0), abs=1e-12)
        assert spread[(classes[0], 1, "0", metric)] == pytest.approx(np.std(per_seed), abs=1e-12)
        checked += 1
    assert checked == 3
    references = [line for line in summary.splitlines() if line.startswith("| ") and line.count("|") == 5]
    for data in load_dataset(dataset, root):
        for seed in (0, 1):
            (ref,) = sample_references(data, 1, seed)
            assert f"| {data.name} | 1 | {seed} | {ref.relative_to(root).as_posix()} |" in references


def test_pixel_metrics_equal_an_independent_recomputation(tmp_path):
    """240x240: grid maps upsampled bilinearly, masks resized nearest; sklearn on every pixel."""
    root = make_visa(tmp_path / "data")  # 64x96 images: squashed to the model input, masks resized
    args = ("--shots", "0", "1", "--seeds", "1", "--classes", "pcb1", "--resize", "squash")
    assert _eval(root, tmp_path / "out", "visa", *args) == 0
    results = _results(tmp_path / "out")
    (data,) = load_dataset("visa", root, ["pcb1"])
    model = make_model().set_object("pcb1")
    x = torch.stack([model.backbone.preprocess(load_image(s.path, str(s.path))) for s in data.test])
    masks = np.stack([_mask(s.mask, (64, 96), (240, 240)) for s in data.test])
    assert masks.any() and not masks.all()
    for shots, refs in ((0, []), (1, sample_references(data, 1, 0))):
        model.fit(refs)
        maps = upsample(model.score(model.encode(x)).maps, (240, 240)).numpy()
        key = ("pcb1", shots, "" if shots == 0 else "0")
        assert results[(*key, "pixel_auroc")] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
        assert results[(*key, "pixel_f1max")] == pytest.approx(_f1max(masks.ravel(), maps.ravel()), abs=1e-9)


@pytest.mark.parametrize("resize", ["squash", "tile"])
def test_original_resolution_equals_predict(tmp_path, resize):
    """--eval-resolution original: the maps model.predict returns at each image's size, also with tiling."""
    root = make_visa(tmp_path / "data", classes=("candle",))
    code = _eval(
        root,
        tmp_path / "out",
        "visa",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--eval-resolution",
        "original",
        "--resize",
        resize,
    )
    assert code == 0
    results = _results(tmp_path / "out")
    scores = np.load(tmp_path / "out" / "scores.npz")
    (data,) = load_dataset("visa", root)
    paper = {"multi_crop": True, "tile_overlap": 0.2, "tile_reduce": "mean"}  # eval's defaults
    model = make_model(resize=resize, **paper).set_object("candle").fit(sample_references(data, 1, 0))
    pred = model.predict([s.path for s in data.test])
    order = [list(scores["path"]).index(s.path.relative_to(root).as_posix()) for s in data.test]
    np.testing.assert_allclose(scores["score"][order], pred.scores.numpy(), rtol=1e-5, atol=1e-6)
    maps = np.concatenate([m.numpy().ravel() for m in pred.maps])
    masks = np.concatenate([_mask(s.mask, (64, 96), (64, 96)).ravel() for s in data.test])
    assert maps.size == masks.size == len(data.test) * 64 * 96
    assert results[("candle", 1, "0", "pixel_auroc")] == pytest.approx(roc_auc_score(masks, maps), abs=1e-6)


class _CountEncode:
    """Wraps WinCLIP.encode; records the batch size of every call."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[int] = []
        original = WinCLIP.encode_batch

        def counting(model, x):
            self.calls.append(int(x.shape[0]))
            return original(model, x)

        monkeypatch.setattr(WinCLIP, "encode_batch", counting)


def test_feature_cache_encodes_each_image_once_and_reuses(tmp_path, monkeypatch, capsys):
    root = make_mvtec(tmp_path / "data")
    counter = _CountEncode(monkeypatch)
    args = ("--shots", "0", "1", "2", "--seeds", "3")
    assert _eval(root, tmp_path / "out", "mvtec", *args) == 0
    classes = load_dataset("mvtec", root)
    needed = {s.path for c in classes for s in c.test}
    needed |= {p for c in classes for k in (1, 2) for seed in range(3) for p in sample_references(c, k, seed)}
    assert sum(counter.calls) == len(needed) == len(list((tmp_path / "out" / "cache").glob("*/*.safetensors")))
    assert f"{len(needed)} images encoded" in capsys.readouterr().out
    with_crops = set()  # multi-crop (eval's default) embeds the test images' crops only: references need none
    for entry in (tmp_path / "out" / "cache").glob("*/*.safetensors"):
        with safe_open(str(entry), framework="pt") as handle:
            if "crops" in handle.keys():
                with_crops.add(entry.stem)
    assert with_crops == {file_sha256(s.path) for c in classes for s in c.test}
    first = (tmp_path / "out" / "results.csv").read_bytes()

    counter.calls.clear()  # the same command again: every row and every feature is reused
    assert _eval(root, tmp_path / "out", "mvtec", *args) == 0
    assert counter.calls == []
    assert (tmp_path / "out" / "results.csv").read_bytes() == first

    # a scoring ablation recomputes every row from cached features, encoding nothing
    assert (
        _eval(
            root,
            tmp_path / "ablation",
            "mvtec",
            *args,
            "--prompts",
            "two-class",
            "--cache",
            str(tmp_path / "out" / "cache"),
        )
        == 0
    )
    assert counter.calls == []
    assert (tmp_path / "ablation" / "results.csv").read_bytes() != first

    # a changed image: exactly one image encoded once
    changed = classes[0].test[0].path
    Image.fromarray(255 - np.asarray(Image.open(changed).convert("RGB"))).save(changed)
    assert _eval(root, tmp_path / "out", "mvtec", *args) == 0
    assert counter.calls == [1]
    assert "1 image encoded" in capsys.readouterr().out

    # a window-scale ablation changes features: a new cache folder
    counter.calls.clear()
    assert _eval(root, tmp_path / "out", "mvtec", *args, "--scales", "3", "--classes", "widget") == 0
    assert sum(counter.calls) == len(
        {s.path for s in classes[1].test}
        | {p for k in (1, 2) for seed in range(3) for p in sample_references(classes[1], k, seed)}
    )
    assert len(list((tmp_path / "out" / "cache").glob("*/settings.json"))) == 2


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    args = ("--shots", "0", "1", "--seeds", "2")
    assert _eval(root, tmp_path / "reference", "folder", *args) == 0

    calls = []
    original = ev.evaluate_run

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(ev, "evaluate_run", interrupted)
    assert _eval(root, tmp_path / "out", "folder", *args) == 130
    assert len(list((tmp_path / "out" / "rows").glob("*.json"))) == 3
    assert not (tmp_path / "out" / "results.csv").exists()
    calls.clear()
    assert _eval(root, tmp_path / "out", "folder", *args) == 0
    assert len(calls) == 6 - 3  # the three finished rows are not recomputed
    for name in ("results.csv", "summary.md"):
        assert (tmp_path / "out" / name).read_text() == (tmp_path / "reference" / name).read_text()
    a, b = np.load(tmp_path / "out" / "scores.npz"), np.load(tmp_path / "reference" / "scores.npz")
    assert sorted(a) == sorted(b) and len(a["score"]) == 2 * 3 * 8
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def _broken_mvtec(root: Path) -> list[str]:
    make_mvtec(root)
    (root / "widget" / "ground_truth" / "blob" / "001_mask.png").unlink()
    (root / "metal_nut" / "test" / "good" / "000.png").write_bytes(b"not a png")
    return [
        f"{root}/metal_nut/test/good/000.png: not a readable image",
        f"{root}/widget/test/blob/001.png: no mask; expected {root}/widget/ground_truth/blob/001_mask.png",
    ]


def _broken_visa(root: Path) -> list[str]:
    make_visa(root)
    (root / "split_csv" / "1cls.csv").unlink()
    return [f"{root}/split_csv/1cls.csv: missing"]


def _broken_folder(root: Path) -> list[str]:
    make_folder(root)
    (root / "widget" / "masks" / "stray.png").write_bytes((root / "widget" / "masks" / "scratch_000.png").read_bytes())
    (root / "gadget" / "good" / "000.png").write_bytes(b"")
    return [
        f"{root}/gadget/good/000.png: not a readable image",
        f"{root}/widget/masks/stray.png: mask matches no defect image",
    ]


def _too_few_references(root: Path) -> list[str]:
    """A valid layout, but 4-shot asks for more references than two classes have."""
    make_folder(root, n_ref=2)
    shutil.rmtree(root / "gadget" / "reference")  # zero-shot only
    return [
        "gadget: 4 references requested but only 0 available "
        "(zero-shot only; put good images in the class's reference/ folder)",
        "widget: 4 references requested but only 2 available",
    ]


@pytest.mark.parametrize(
    "dataset, breaker",
    [("mvtec", _broken_mvtec), ("visa", _broken_visa), ("folder", _broken_folder), ("folder", _too_few_references)],
)
def test_layout_problems_exit_2_before_any_model(tmp_path, monkeypatch, capsys, dataset, breaker):
    root = tmp_path / "data"
    expected = breaker(root)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the layout check")

    monkeypatch.setattr(WinCLIP, "__init__", no_model)
    assert _eval(root, tmp_path / "out", dataset, "--shots", "0", "1", "4") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    plural = "s" if len(expected) > 1 else ""
    assert lines[0] == f"winclip: error: invalid dataset ({len(expected)} problem{plural}):"
    assert sorted(lines[1:]) == sorted(expected)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    root = make_mvtec(tmp_path / "data", classes=("widget",))
    assert _eval(root, tmp_path / "out", "mvtec", "--eval-resolution", "full") == 2
    assert capsys.readouterr().err.strip().endswith("got 'full'")
    assert _eval(root, tmp_path / "out", "mvtec", "--classes", "nope") == 2
    assert f"{root}: unknown class(es) nope; available: widget" in capsys.readouterr().err
    assert _eval(root, tmp_path / "out", "mvtec", "--table", "3", "--temperature", "0.1", "--no-multi-crop") == 2
    assert "winclip: error: --table 3 sets --temperature, --multi-crop per row itself; leave them out" in (
        capsys.readouterr().err
    )


TINY_ARGS = ["--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "4"]


def test_visa_eval_tiles_and_averages_the_tiles_predictions(tmp_path):
    """Default VisA eval: each tile predicted on its own; image score = mean over tiles, pixel = mean over tiles."""
    root = make_visa(tmp_path / "data", classes=("candle",), size=(64, 112))
    out = tmp_path / "out"
    args = ["--dataset", "visa", "--root", str(root), "--out", str(out), "--shots", "0", "--eval-resolution"]
    assert main(["eval", *args, "original", *TINY_ARGS]) == 0
    scores = np.load(out / "scores.npz")
    (data,) = load_dataset("visa", root)
    model = make_model(multi_crop=True).set_object("candle")  # squash: one tile is one square image
    from sklearn.metrics import roc_auc_score

    maps, masks = [], []
    for sample in data.test:
        img = Image.open(sample.path).convert("RGB")
        side, long = 64, 112
        n = math.ceil((long - side) / (0.8 * side)) + 1
        lefts = [round(i * (long - side) / (n - 1)) for i in range(n)]
        tiles = [img.crop((x, 0, x + side, side)) for x in lefts]
        pred = model.predict(tiles)
        total, count = torch.zeros(64, 112), torch.zeros(64, 112)
        for x, tile_map in zip(lefts, pred.maps, strict=True):
            total[:, x : x + side] += tile_map
            count[:, x : x + side] += 1
        maps.append((total / count).numpy().ravel())
        mask = np.zeros((64, 112), bool) if sample.mask is None else np.asarray(Image.open(sample.mask)) > 0
        masks.append(mask.ravel())
        i = list(scores["path"]).index(sample.path.relative_to(root).as_posix())
        assert scores["score"][i] == pytest.approx(float(pred.scores.mean()), abs=1e-5)
    summary = (out / "summary.md").read_text()
    assert "tile (overlap ≥ 0.2, image score = mean over tiles)" in summary and "on (ten crops)" in summary
    import csv

    with (out / "results.csv").open() as handle:
        got = {r["metric"]: float(r["value"]) for r in csv.DictReader(handle) if r["class"] == "candle"}
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(np.concatenate(masks), np.concatenate(maps)), abs=1e-6)
