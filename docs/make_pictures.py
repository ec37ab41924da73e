"""Make the README's picture of the result from synthetic photos, with the real `winclip` commands.

    python docs/make_pictures.py            # writes docs/inspection_workflow.png, prints the report and CSV

The model is a small open_clip ViT with RANDOM weights (no download), so the scores and heat
maps are MEANINGLESS: the picture (two of the composites `winclip predict` writes) only shows what the
workflow writes. The figure says so.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from winclip.cli import main

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


def figure(results: Path, names: list[str]) -> Image.Image:
    """The composites `winclip predict` wrote for `names`, one above the other, under a RANDOM WEIGHTS banner."""
    pictures = [Image.open(results / "composites" / f"{name.rsplit('.', 1)[0]}.png").convert("RGB") for name in names]
    banner_h, pad = 30, 6
    width = max(p.width for p in pictures)
    sheet = Image.new("RGB", (width, banner_h + sum(p.height + pad for p in pictures)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((0, 0, width, banner_h - 6), fill=(176, 42, 42))
    text = (
        "RANDOM WEIGHTS: what `winclip predict` writes (composites/), not how well it detects: scores are MEANINGLESS"
    )
    draw.text((8, 6), text, fill=(255, 255, 255), font=ImageFont.load_default(size=14))
    y = banner_h
    for picture in pictures:
        sheet.paste(picture, (0, y))
        y += picture.height + pad
    return sheet


def main_() -> int:
    rng = np.random.default_rng(7)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chdir(root)  # relative paths, as a user types them (and as the composites name the photos)
        try:
            Path("demo-vit.json").write_text(json.dumps(DEMO_VIT))
            write_photos(Path("."), rng)
            model = ["--backbone", "demo-vit.json", "--pretrained", "none", "--device", "cpu"]
            prof, out = "bracket.winclip", Path("results")
            run(root, ["profile", "create", "--object", "metal bracket", "--good", "refs", "--out", prof, *model])
            holdout = ["--good", "holdout_good", "--bad", "holdout_bad"]
            cpu = ["--device", "cpu"]  # the profile holds its model config: no --backbone from here on
            run(root, ["profile", "calibrate", prof, *holdout, "--target-fpr", "0.1", "--review-fpr", "0.3", *cpu])
            run(root, ["predict", "incoming", "--profile", prof, "--out", str(out), "--no-progress", *cpu])
            print((out / "results.csv").read_text())
            print((out / "errors.csv").read_text())
            picture = figure(out, ["line1/001_scratch.png", "line2/002_chip.png"])
        finally:
            os.chdir(here)
        picture.save(DOCS / "inspection_workflow.png", optimize=True)
    print(f"wrote {DOCS / 'inspection_workflow.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
