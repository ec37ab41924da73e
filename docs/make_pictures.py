"""Make the README's inspection-workflow pictures from synthetic photos, with the real `winclip` commands.

    python docs/make_pictures.py            # writes docs/inspection_*.png, prints the report and CSV

The model is a small open_clip ViT with RANDOM weights (no download), so the scores and heat
maps are MEANINGLESS: the pictures only show what the workflow writes. The figure says so.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from winclip.cli import main
from winclip.inspection.render import colorize

DOCS = Path(__file__).resolve().parent
# A small random-weight ViT: 128 px input, 8 px patches -> a 16x16 grid (fast on a CPU).
DEMO_VIT = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 128, "layers": 3, "width": 96, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
SIZE = (192, 256)  # (H, W) of the synthetic photos


def part(rng: np.random.Generator, defect: str | None = None) -> Image.Image:
    """A synthetic photo: a grey bracket with two holes on a textured bench; optional defect."""
    h, w = SIZE
    noise = rng.normal(0, 1, (h // 8, w // 8))
    bench = Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 40 + 60).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    img = Image.merge("RGB", (bench, bench.point(lambda v: v * 0.9), bench.point(lambda v: v * 0.7)))
    draw = ImageDraw.Draw(img)
    dx, dy = rng.integers(-4, 5, 2)
    draw.rounded_rectangle(
        (40 + dx, 50 + dy, 216 + dx, 142 + dy), radius=18, fill=(170, 172, 178), outline=(120, 122, 128), width=3
    )
    for cx in (85, 171):
        draw.ellipse((cx - 14 + dx, 82 + dy, cx + 14 + dx, 110 + dy), fill=(40, 40, 45))
    if defect == "scratch":
        draw.line((110 + dx, 60 + dy, 150 + dx, 130 + dy), fill=(60, 50, 45), width=4)
    elif defect == "stain":
        draw.ellipse((120 + dx, 58 + dy, 150 + dx, 80 + dy), fill=(150, 90, 40))
    elif defect == "chip":
        draw.polygon([(216 + dx, 60 + dy), (190 + dx, 70 + dy), (216 + dx, 95 + dy)], fill=(70, 65, 60))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def write_photos(root: Path, rng: np.random.Generator) -> None:
    """refs/, holdout_good/, holdout_bad/ and incoming/ (with one corrupt file)."""
    plan = {
        "refs": [None] * 3,
        "holdout_good": [None] * 8,
        "holdout_bad": ["scratch", "stain", "chip"],
        "incoming/line1": [None, "scratch"],
        "incoming/line2": ["stain", None, "chip"],
    }
    for folder, defects in plan.items():
        (root / folder).mkdir(parents=True)
        for i, d in enumerate(defects):
            part(rng, d).save(root / folder / f"{i:03d}{'_' + d if d else ''}.png")
    (root / "incoming" / "line2" / "truncated.png").write_bytes((root / "refs" / "000.png").read_bytes()[:200])


def run(root: Path, argv: list[str]) -> None:
    print("$ winclip " + " ".join(a.replace(str(root) + "/", "") for a in argv), flush=True)
    code = main(argv)
    print(f"(exit status {code})", flush=True)


def figure(root: Path, results: Path, names: list[str]) -> Image.Image:
    """Photo | overlay | mask rows with labels, a colour-scale bar and a RANDOM WEIGHTS banner."""
    rows = {r["path"]: r for r in csv.DictReader((results / "results.csv").open())}
    h, w = SIZE
    pad, text_h, banner_h = 8, 30, 34
    sheet = Image.new("RGB", (3 * w + 4 * pad, banner_h + len(names) * (h + text_h + pad) + 64), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((0, 0, sheet.width, banner_h - 6), fill=(180, 0, 0))
    draw.text(
        (pad, 8),
        "RANDOM WEIGHTS: illustration of the outputs only - scores and heat maps are MEANINGLESS",
        fill=(255, 255, 255),
    )
    y = banner_h
    for name in names:
        row = rows[str(root / "incoming" / name)]
        stem = name.rsplit(".", 1)[0]
        tiles = [
            Image.open(root / "incoming" / name).convert("RGB"),
            Image.open(results / "overlays" / f"{stem}.png").convert("RGB"),
            Image.open(results / "masks" / f"{stem}.png").convert("RGB"),
        ]
        captions = [
            name,
            f"overlay: score {float(row['score']):.3f} -> {row['label']}",
            f"mask: {row['n_regions']} region(s)",
        ]
        for i, (tile, cap) in enumerate(zip(tiles, captions, strict=True)):
            x = pad + i * (w + pad)
            draw.text((x, y + 4), cap, fill=(0, 0, 0))
            sheet.paste(tile, (x, y + text_h - 8))
        y += h + text_h + pad
    t = float(next(iter(rows.values()))["threshold"])
    span = 3 * w + 2 * pad
    ramp = np.linspace(0.0, 1.0, span)[None, :].repeat(14, 0)
    sheet.paste(Image.fromarray(colorize(ramp, t)), (pad, y + 6))
    tick = pad + round(t * (span - 1))
    draw.line((tick, y + 2, tick, y + 24), fill=(0, 0, 0), width=2)
    draw.text((pad, y + 26), "map 0", fill=(0, 0, 0))
    draw.text((tick - 40, y + 26), f"threshold {t:.3f}", fill=(0, 0, 0))
    draw.text((pad + span - 40, y + 26), "map 1", fill=(0, 0, 0))
    draw.text(
        (pad, y + 40),
        "overlay colours: fixed scale, yellow exactly at the threshold (never stretched per image)",
        fill=(0, 0, 0),
    )
    return sheet


def main_() -> int:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "demo-vit.json").write_text(json.dumps(DEMO_VIT))
        write_photos(root, rng)
        model = ["--backbone", str(root / "demo-vit.json"), "--pretrained", "none", "--device", "cpu"]
        prof, out = str(root / "bracket.winclip"), root / "results"
        run(
            root,
            ["profile", "create", "--object", "metal bracket", "--good", str(root / "refs"), "--out", prof, *model],
        )
        holdout = ["--good", str(root / "holdout_good"), "--bad", str(root / "holdout_bad")]
        run(root, ["profile", "calibrate", prof, *holdout, "--target-fpr", "0.1", "--review-fpr", "0.3", *model])
        run(root, ["predict", str(root / "incoming"), "--profile", prof, "--out", str(out), "--no-progress", *model])
        print((out / "results.csv").read_text().replace(str(root) + "/", ""))
        print((out / "errors.csv").read_text().replace(str(root) + "/", ""))
        names = ["line1/000.png", "line1/001_scratch.png", "line2/000_stain.png", "line2/002_chip.png"]
        figure(root, out, names).save(DOCS / "inspection_workflow.png", optimize=True)
    print(f"wrote {DOCS / 'inspection_workflow.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
