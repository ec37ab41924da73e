"""The web page in headless Chromium against a real `winclip serve` with an API key (random weights): give
the key once, create a profile, inspect images, move the threshold slider, see labels and confidence change
and regions marked stale, see placeholders for a CLI-made profile's photos, open /docs (Swagger UI 5 reads
OpenAPI 3.1); no Content-Security-Policy violation anywhere; screenshot (→ docs/service.png with
WINCLIP_UPDATE_DOCS=1)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from PIL import Image, ImageDraw

from helpers import TINY
from helpers.service import ROOT, start_server, stop_server
from winclip.cli import main

KEY = "browser-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

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


def wait_js(page, expression: str, timeout: float) -> None:
    """Poll a JavaScript expression until true (page.evaluate runs under the page's CSP; wait_for_function's
    string predicates need 'unsafe-eval', which the page rightly refuses)."""
    import time

    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def _confidence(score: float, t: float, scale: float = 0.05) -> float:
    return 1 / (1 + np.exp(-(score - t) / scale))


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
    cli_made = tmp_path / "profiles" / "cli-made"  # made by `winclip profile create`: no stored photos
    model = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]
    good = [str(files["good1.png"]), str(files["good2.png"])]
    assert main(["profile", "create", "--object", "bracket", "--good", *good, "--out", str(cli_made), *model]) == 0
    (tmp_path / "key").write_text(KEY + "\n")
    proc, url = start_server(
        tmp_path / "profiles", "--api-key-file", str(tmp_path / "key"), log=tmp_path / "server.log"
    )
    violations: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(url)
            page.wait_for_selector("#key-form", state="visible", timeout=30_000)  # asked for the key, once
            page.fill("#key-input", KEY)
            page.click("#key-submit")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert "ready" in page.inner_text("#status") and not page.is_visible("#key-form")
            # the CLI-made profile: placeholders, not broken pictures
            assert page.input_value("#profile-select") == "cli-made"
            assert page.locator("#refs .placeholder").count() == 2 and page.locator("#refs img").count() == 0
            # create a profile from two good photos
            page.click("#create-box summary")
            page.fill("#new-name", "bracket")
            page.fill("#new-object", "metal bracket")
            page.fill("#new-normal", "{o} with a sticker")
            page.set_input_files("#new-good", [str(files["good1.png"]), str(files["good2.png"])])
            assert page.locator("#new-good-thumbs img").count() == 2
            page.click("#create")
            wait_js(
                page, "document.querySelector('#create-msg').textContent.startsWith('created bracket')", timeout=30_000
            )
            assert page.input_value("#profile-select") == "bracket"
            wait_js(
                page,
                "[...document.querySelectorAll('#refs img')].filter((i) => i.naturalWidth > 0).length === 2",
                timeout=10_000,
            )  # stored photos fetched with the key (blob URLs)
            # inspect two photos
            page.set_input_files("#inspect-files", [str(files[n]) for n in parts])
            wait_js(page, "document.querySelectorAll('.card .label').length === 4", timeout=30_000)
            wait_js(page, "document.querySelector('#inspect-msg').textContent.includes('4 inspected')", timeout=30_000)
            rows = httpx.get(f"{url}/v1/inspections?profile=bracket", headers=AUTH).json()["items"]
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

            def details(kind: str) -> list[str]:
                return [cards.nth(i).locator(f".{kind}").inner_text() for i in range(n_cards)]

            assert all("stale" not in x for x in details("regions"))
            assert details("confidence") == [f"confidence {_confidence(scores[n], 0.5):.3f}" for n in names]
            # the slider relabels: just below a score -> anomalous, just above -> normal
            low, high = min(scores.values()), max(scores.values())
            before = canvas_png(page, 0)
            page.fill("#threshold", f"{low - 0.002:.3f}")
            assert labels() == ["anomalous"] * 4
            assert canvas_png(page, 0) != before  # recoloured from the returned map
            t = round(low - 0.002, 3)
            assert details("confidence") == [f"confidence {_confidence(scores[n], t):.3f}" for n in names]
            assert all("stale at" in x for x in details("regions"))  # the server's regions were made at 0.5
            page.fill("#threshold", f"{high + 0.002:.3f}")
            assert labels() == ["normal"] * 4
            assert page.inner_text("#threshold-value") == f"{high + 0.002:.3f}"
            mid = float(np.median(list(scores.values())))
            page.fill("#threshold", f"{mid:.3f}")
            assert labels() == ["anomalous" if scores[n] >= round(mid, 3) else "normal" for n in names]
            # history table and the threshold saved on the server; the cards stay
            assert page.locator("#history tbody tr").count() == 4
            page.click("#save-threshold")
            wait_js(page, "document.querySelector('#threshold-msg').textContent.startsWith('saved')", timeout=10_000)
            saved = httpx.get(f"{url}/v1/profiles/bracket", headers=AUTH).json()["threshold"]
            assert saved == pytest.approx(round(mid, 3))
            # changed meanwhile by another client (or replica): the page's save is refused (412), then re-read
            assert httpx.patch(f"{url}/v1/profiles/bracket", headers=AUTH, json={"threshold": 0.9}).status_code == 200
            page.click("#save-threshold")
            wait_js(
                page, "document.querySelector('#threshold-msg').textContent.startsWith('not saved')", timeout=10_000
            )
            page.click("#save-threshold")
            wait_js(page, "document.querySelector('#threshold-msg').textContent.startsWith('saved')", timeout=10_000)
            assert httpx.get(f"{url}/v1/profiles/bracket", headers=AUTH).json()["revision"] == 4
            assert cards.count() == 4 and "0 refused" in page.inner_text("#inspect-msg")
            with page.expect_download() as download:  # the CSV, fetched with the key
                page.click("#csv")
            assert download.value.suggested_filename == "inspections.csv"
            assert Path(download.value.path()).read_text().count("\n") == 5  # header + 4 rows
            shot = tmp_path / "service.png"
            page.screenshot(path=str(shot), full_page=True)
            # the API docs: Swagger UI 5, served by the app, lists every operation
            docs = browser.new_page()
            docs.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            docs.goto(f"{url}/docs")
            docs.wait_for_selector(".opblock", timeout=30_000)
            operations = docs.locator(".opblock").count()
            assert operations == 11 and "Unable to render" not in docs.inner_text("body")
            assert docs.locator(".opblock-summary-path", has_text="/v1/profiles/{name}/predict").count() == 1
            assert docs.locator("button.authorize").count() == 1  # the Bearer key can be given there
            browser.close()
    finally:
        status = stop_server(proc)
    log = (tmp_path / "server.log").read_text()
    # uvicorn finishes its graceful shutdown, then re-raises the SIGTERM it caught
    assert status in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log
    assert not violations, violations
    assert log.count("401 GET /v1/") >= 1  # the page's first call, before the key
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 900 and pixels.std() > 20  # not blank
    if os.environ.get("WINCLIP_UPDATE_DOCS") == "1":  # refresh the README's screenshot on request only
        shutil.copyfile(shot, ROOT / "docs" / "service.png")
