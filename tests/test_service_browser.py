"""The web page in headless Chromium against a real `winclip serve` (random weights): create a
profile, inspect images, move the threshold slider, see labels change; screenshot (→ docs/service.png with
WINCLIP_UPDATE_DOCS=1)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip[serve]'")

from PIL import Image, ImageDraw

from test_service_support import ROOT, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs Debian's chromium)"),
]


def photo(rng: np.random.Generator, h: int, w: int, defect: bool) -> Image.Image:
    """A grey bracket with holes on a dark, slightly noisy background; a dark scratch when `defect`."""
    img = Image.new("RGB", (w, h), (38, 42, 48))
    draw = ImageDraw.Draw(img)
    shade = int(rng.integers(160, 190))
    draw.rounded_rectangle((w * 0.12, h * 0.2, w * 0.88, h * 0.8), radius=h // 8, fill=(shade, shade, shade + 8))
    for cx in (0.27, 0.73):
        draw.ellipse((w * cx - h * 0.08, h * 0.42, w * cx + h * 0.08, h * 0.58), fill=(38, 42, 48))
    if defect:
        x0, y0 = w * rng.uniform(0.35, 0.5), h * rng.uniform(0.3, 0.45)
        draw.line((x0, y0, x0 + w * 0.15, y0 + h * 0.2), fill=(70, 40, 30), width=max(2, h // 30))
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def canvas_png(page, index: int) -> str:
    return page.evaluate("(i) => document.querySelectorAll('.card canvas')[i].toDataURL()", index)


def test_page_creates_inspects_and_relabels(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    import httpx

    rng = np.random.default_rng(7)
    files = {}
    for name in ("good1.png", "good2.png", "part1_ok.png", "part2_scratch.png", "part3_ok.png", "part4_scratch.png"):
        files[name] = tmp_path / name
        photo(rng, 180, 240, "scratch" in name).save(files[name])
    parts = sorted(n for n in files if n.startswith("part"))
    proc, url = start_server(tmp_path / "profiles", log=tmp_path / "server.log")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert "ready" in page.inner_text("#status")
            # create a profile from two good photos
            page.fill("#new-name", "bracket")
            page.fill("#new-object", "metal bracket")
            page.fill("#new-normal", "{o} with a sticker")
            page.set_input_files("#new-good", [str(files["good1.png"]), str(files["good2.png"])])
            assert page.locator("#new-good-thumbs img").count() == 2
            page.click("#create")
            page.wait_for_function(
                "document.querySelector('#create-msg').textContent.startsWith('created bracket')", timeout=30_000
            )
            assert page.locator("#refs img").count() == 2
            assert page.input_value("#profile-select") == "bracket"
            # inspect two photos
            page.set_input_files("#inspect-files", [str(files[n]) for n in parts])
            page.wait_for_function("document.querySelectorAll('.card .label').length === 4", timeout=30_000)
            page.wait_for_function(
                "document.querySelector('#inspect-msg').textContent.includes('4 inspected')", timeout=30_000
            )
            rows = httpx.get(f"{url}/v1/inspections?profile=bracket").json()["items"]
            assert len(rows) == 4
            scores = {r["filename"]: r["score"] for r in rows}
            cards = page.locator(".card")
            n_cards = cards.count()
            assert n_cards == 4
            names = [cards.nth(i).locator(".name").inner_text() for i in range(n_cards)]
            assert sorted(names) == parts

            def labels() -> list[str]:
                return [cards.nth(i).locator(".label").inner_text() for i in range(n_cards)]

            assert labels() == ["anomalous" if scores[n] >= 0.5 else "normal" for n in names]
            # the slider relabels: just below a score -> anomalous, just above -> normal
            low, high = min(scores.values()), max(scores.values())
            before = canvas_png(page, 0)
            page.fill("#threshold", f"{low - 0.002:.3f}")
            assert labels() == ["anomalous"] * 4
            assert canvas_png(page, 0) != before  # recoloured from the returned map
            page.fill("#threshold", f"{high + 0.002:.3f}")
            assert labels() == ["normal"] * 4
            assert page.inner_text("#threshold-value") == f"{high + 0.002:.3f}"
            mid = float(np.median(list(scores.values())))
            page.fill("#threshold", f"{mid:.3f}")
            assert labels() == ["anomalous" if scores[n] >= round(mid, 3) else "normal" for n in names]
            # history table and the threshold saved on the server; the cards stay
            assert page.locator("#history tbody tr").count() == 4
            page.click("#save-threshold")
            page.wait_for_function(
                "document.querySelector('#threshold-msg').textContent.startsWith('saved')", timeout=10_000
            )
            assert httpx.get(f"{url}/v1/profiles/bracket").json()["threshold"] == pytest.approx(round(mid, 3))
            assert cards.count() == 4 and "0 refused" in page.inner_text("#inspect-msg")
            shot = tmp_path / "service.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        status = stop_server(proc)
    log = (tmp_path / "server.log").read_text()
    # uvicorn finishes its graceful shutdown, then re-raises the SIGTERM it caught
    assert status in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 900 and pixels.std() > 20  # not blank
    if os.environ.get("WINCLIP_UPDATE_DOCS") == "1":  # refresh the README's screenshot on request only
        shutil.copyfile(shot, ROOT / "docs" / "service.png")
