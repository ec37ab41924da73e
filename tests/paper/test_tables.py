"""`winclip eval --table N` on the synthetic datasets (random weights), and the baselines its rows run."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import TINY, make_model, textured
from helpers.synthetic import make_mvtec, make_visa
from winclip import WinCLIP
from winclip.cli import main
from winclip.cli.eval import BASELINE_CHOICES, TABLE_CHOICES
from winclip.method.zero_shot import ascore0, gaussian_smooth, upsample
from winclip.paper.baselines import BASELINES, ImageTilingBaseline, make_baseline
from winclip.paper.reproduce import cpu_name, slug
from winclip.paper.tables import TABLES, paper_figure, paper_figures

pytestmark = pytest.mark.xdist_group("tables")  # its module fixtures are made once, on one worker

TINY_ARGS = ["--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "4"]


def test_the_command_line_names_every_table_and_baseline():
    assert TABLE_CHOICES == tuple(TABLES) and BASELINE_CHOICES == BASELINES


def test_every_paper_cell_of_every_table_has_its_figure():
    figures = paper_figures()
    assert figures[("3", "(d) + Multi-crop", "mvtec", "mean", "image_auroc", 0)].mean == 91.8
    assert figures[("per-class", "WinCLIP+", "visa", "mean", "image_auroc", 1)].mean == 83.8
    assert figures[("8", "Image tiling", "mvtec", "mean", "time_ms", 0)].std == 62.2
    missing = []
    for table in TABLES.values():
        dataset = "visa" if table.dataset == "visa" else "mvtec"
        for row in table.rows:
            shots = table.shots if table.layout == "shots" else row.shots
            classes = (*table.classes, "mean")
            for metric in table.metrics + (("time_ms",) if table.timed else ()):
                for k in shots:
                    for cls in classes:
                        if paper_figure(figures, table, row, dataset, metric, k, cls) is None:
                            missing.append((table.key, row.label, metric, k, cls))
    assert missing == []


# -- baselines --------------------------------------------------------------------------------


def test_image_tiling_cuts_windows_from_the_pixels(rng):
    model = make_baseline("image-tiling", make_model())
    assert isinstance(model, ImageTilingBaseline)
    part = Image.fromarray(textured(rng, 48, 80))
    view = model.backbone.preprocess(part)[None]
    grid = model.backbone.grid[0]
    whole = model.tile_embeddings(part, grid)  # the window of every patch is the view itself
    torch.testing.assert_close(whole, model.embed(view), rtol=1e-5, atol=1e-5)
    tiles = model.tile_embeddings(part, 3)
    assert tiles.shape[0] == (grid - 2) ** 2
    r, c = 2, 4  # window (2, 4) of the 3x3 windows: rows 2-4, columns 4-6 of the 8x8 grid
    box = (c * 80 / grid, r * 48 / grid, (c + 3) * 80 / grid, (r + 3) * 48 / grid)
    crop = part.resize((64, 64), Image.Resampling.BICUBIC, box=box)
    expected = model.embed(model.backbone.preprocess(crop)[None])[0]
    torch.testing.assert_close(tiles[r * (grid - 2) + c], expected, rtol=1e-5, atol=1e-5)


def test_patch_token_maps_are_ascore0_of_projected_tokens(rng):
    base = make_model().set_object("bottle")
    model = make_baseline("patch-token", base).set_object("bottle")
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    feats = base.encode_images(images).features
    expected = ascore0(feats.patches @ base.clip.visual.proj, *base.prototypes_, 0.07)
    got = model.score(model.encode_images(images).features)
    torch.testing.assert_close(got.maps.flatten(1), expected, rtol=1e-5, atol=1e-6)


def _official_patchcore_embedding(layers: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """patchcore-inspection's PatchMaker.patchify + MeanMapper + Aggregator, written out on (N, L, C) tokens."""
    pooled = []
    for tokens in layers:
        n, _, width = tokens.shape
        maps = tokens.permute(0, 2, 1).reshape(n, width, *grid)
        unfolded = torch.nn.Unfold(kernel_size=3, stride=1, padding=1)(maps)
        unfolded = unfolded.reshape(n, width, 3, 3, -1).permute(0, 4, 1, 2, 3).reshape(-1, width, 3, 3)
        pooled.append(F.adaptive_avg_pool1d(unfolded.reshape(len(unfolded), 1, -1), 1024).squeeze(1))
    stacked = torch.stack(pooled, dim=1)
    return F.adaptive_avg_pool1d(stacked.reshape(len(stacked), 1, -1), 1024).reshape(len(stacked), -1)


def test_patchcore_follows_the_official_embedding_and_scores(rng):
    base = make_model().set_object("bottle")
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(3)]
    for kind in ("patchcore-last", "patchcore-hidden"):
        model = make_baseline(kind, base).set_object("bottle")
        feats = model.encode_images(images).features
        layers = [feats.patches] if kind == "patchcore-last" else list(feats.patches.split(64, dim=-1))
        expected = _official_patchcore_embedding(layers, model.backbone.grid)
        torch.testing.assert_close(model.embed_patches(feats.patches).flatten(0, 1), expected, rtol=1e-5, atol=1e-6)
        model.fit_features(feats[:2])
        got = model.score(feats)
        assert got.scores[:2].max() < 1e-3 * got.scores[2]  # a reference is its own nearest neighbour (0 up to mm)
        memory = expected[: 2 * 64]
        query = expected[2 * 64 :]
        nearest = torch.cdist(query, memory).square().amin(1)
        torch.testing.assert_close(got.maps[2].flatten(), nearest, rtol=1e-4, atol=1e-5)
        fine = gaussian_smooth(upsample(got.maps[2:], (64, 64)), 4.0)[0]
        torch.testing.assert_close(model.full_map(got.maps[2:], [None], (64, 64)), fine)
    with pytest.raises(ValueError, match="no zero-shot mode"):
        make_baseline("patchcore-last", base).set_object("bottle").score(feats)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("spade", base)


# -- tables -------------------------------------------------------------------------------------

TINY_TABLE9 = {"tiny-vit-56": (56, 8, 2), "tiny-vit-l": (64, 8, 3)}  # name: image size, patch, layers


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tables")
    mvtec = make_mvtec(base / "mvtec", n_train=8, n_good=2, n_bad=2)  # Tables 5 and 6 need 8 references
    visa = make_visa(base / "visa", classes=("pcb2", "pipe_fryum", "candle"), n_train=2, n_good=2, n_bad=2)
    configs = []
    for name, (size, patch, layers) in TINY_TABLE9.items():
        cfg = json.loads(Path(TINY).read_text())
        cfg["vision_cfg"].update(image_size=size, patch_size=patch, layers=layers)
        (base / f"{name}.json").write_text(json.dumps(cfg))
        configs.append(str(base / f"{name}.json"))
    return {"mvtec": mvtec, "visa": visa, "out": base / "out", "configs": configs}


def _table_cells(text: str, row) -> list[str]:
    """The cells of a row's line in tableN.md (found by its setup and label)."""
    label = row.label + ("" if row.runs else " †")
    start = f"| {row.setup} | {label} |" if row.setup else f"| {label} |"
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def _our_mean(results: Path, metric: str, shots: int) -> tuple[float, float]:
    """Mean over classes and mean over classes of the per-class population std, from results.csv."""
    values: dict[str, list[float]] = {}
    with results.open() as handle:
        for r in csv.DictReader(handle):
            if r["metric"] == metric and int(r["shots"]) == shots:
                values.setdefault(r["class"], []).append(float(r["value"]))
    return float(np.mean([np.mean(v) for v in values.values()])), float(np.mean([np.std(v) for v in values.values()]))


@pytest.mark.slow
@pytest.mark.parametrize("key", list(TABLES))
def test_each_table_runs_its_rows_with_the_papers_figures_beside(datasets, key):
    """Every row of the table in tableN.md: ours beside the paper's figure, or the paper's alone (†); a mean
    cell is the mean over classes ± the mean of the per-class stds of that row's own results.csv."""
    table = TABLES[key]
    dataset = "visa" if table.dataset == "visa" else "mvtec"
    out = datasets["out"] / dataset
    extra = ["--table-backbones", f"{datasets['configs'][0]}:none", f"{TINY}:none", f"{datasets['configs'][1]}:none"]
    args = ["eval", "--table", key, "--dataset", dataset, "--root", str(datasets[dataset]), "--out", str(out)]
    args += [
        "--seeds",
        "2",
        "--timing-images",
        "2",
        "--eval-resolution",
        "64",
        *TINY_ARGS,
        *(extra if key == "9" else []),
    ]
    assert main(args) == 0
    text = (out / f"table{key}.md").read_text()
    assert text.startswith(f"# Table {key}: {table.title}") and "RANDOM WEIGHTS" in text
    for row in table.rows:
        cells = _table_cells(text, row)
        figures = [c for c in cells if re.search(r"\(\d+\.\d", c)]
        assert figures, f"{row.label}: no paper figure in {cells}"
        if not row.runs:
            assert all(c.startswith("—") for c in figures)
            continue
        first = next(c for c in cells if re.match(r"^\d", c) and "(" in c)
        assert re.match(r"^\d+\.\d( ± \d+\.\d)? \(\d+\.\d( ± \d+\.\d)?, [+-]\d+\.\d\)$", first), first
    if table.timed:  # ours on this run's device beside the paper's on a T4, never "ours minus the paper's"
        head = next(line for line in text.splitlines() if line.startswith("| Method"))
        assert f"| ms/image, ours ({cpu_name()}) | ms/image, paper (T4 GPU) |" in head, head
        timed = [r for r in table.rows if r.runs]
        assert len(timed) >= 3
        for row in timed:
            ours, paper = _table_cells(text, row)[-2:]
            assert re.fullmatch(r"\d+\.\d ± \d+\.\d", ours), ours
            assert re.fullmatch(r"\d+\.\d( ± \d+\.\d)?|—", paper), paper
    run = [r for r in table.rows if r.runs]
    row = run[-1]
    results = out / f"table{key}" / slug(row) / "results.csv"
    shots = table.shots[-1] if table.layout == "shots" else row.shots[-1]
    metric = table.metrics[0]
    mean, std = _our_mean(results, metric, shots)
    cells = _table_cells(text, row)
    column = cells.index(next(c for c in cells if re.match(r"^\d", c) and "(" in c))
    if table.layout == "shots":
        column += len(table.shots) - 1
    elif table.layout == "classes":
        column += len(table.classes)
    expected = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if shots else "")
    assert cells[column].startswith(expected + " ("), (cells[column], expected)


def test_a_tables_rows_share_their_encodings(tmp_path, monkeypatch):
    """Table 3's five rows: each test image encoded once, its crops once, nothing again on a rerun."""
    root = make_mvtec(tmp_path / "data", classes=("widget",), n_good=3, n_bad=3)
    calls = {"encode": 0, "crops": 0}
    encode, crops = WinCLIP.encode_batch, WinCLIP.encode_crops

    def counting_encode(self, x):
        calls["encode"] += len(x)
        return encode(self, x)

    def counting_crops(self, images):
        calls["crops"] += len(images)
        return crops(self, images)

    monkeypatch.setattr(WinCLIP, "encode_batch", counting_encode)
    monkeypatch.setattr(WinCLIP, "encode_crops", counting_crops)
    args = ["eval", "--table", "3", "--dataset", "mvtec", "--root", str(root), "--out", str(tmp_path / "out")]
    assert main([*args, *TINY_ARGS]) == 0
    assert calls == {"encode": 6, "crops": 6}
    assert len(list((tmp_path / "out" / "cache").glob("*/*.safetensors"))) == 6
    assert main([*args, *TINY_ARGS]) == 0
    assert calls == {"encode": 6, "crops": 6}
