"""The page a person reads: the composite per answer (as `winclip predict` draws it), the original photo on click,
a colour legend, same-named files told apart, history rows that open their record, the review threshold where it
differs, a banner on random weights, and nothing that reads as broken before the script runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from PIL import Image

from helpers import TINY, textured
from helpers.service import ROOT, app_for, start_server, stop_server, wait_ready
from winclip.cli import main
from winclip.inspection import composite as layout
from winclip.inspection.render import HEAT_ALPHA, HEAT_COLORMAP

STATIC = ROOT / "src" / "winclip" / "service" / "static"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_the_page_draws_with_the_composites_scale_and_layout():
    script = (STATIC / "app.js").read_text()
    heat = re.search(r"const HEAT = (\[.*?\]);\n", script, re.S).group(1)
    stops = [
        (float(x), tuple(int(c) for c in rgb.split(","))) for x, rgb in re.findall(r"\[([\d.]+), \[([\d, ]+)\]\]", heat)
    ]
    assert stops == list(HEAT_COLORMAP)
    assert f"const HEAT_ALPHA = {HEAT_ALPHA};" in script
    expected = (
        f"const LAYOUT = {{ min: {layout.PANEL_MIN}, max: {layout.PANEL_MAX}, maxWidth: {layout.PANEL_MAX_WIDTH}, "
        f"margin: {layout.MARGIN}, gap: {layout.GAP}, footer: {layout.FOOTER}, title: {layout.TITLE_SIZE}, "
        f"text: {layout.TEXT_SIZE} }};"
    )
    assert expected in script


def test_before_its_script_runs_the_page_says_nothing_that_reads_as_broken():
    page = (STATIC / "index.html").read_text()
    visible = re.sub(r"<script.*?</script>|<noscript>.*?</noscript>|<[^>]+>", " ", page, flags=re.S)
    assert "connecting" not in visible and "no profile" not in visible
    assert '<div id="banner" class="banner hidden" role="alert"></div>' in page


def test_readiness_says_when_the_weights_are_random(tmp_path):
    with app_for(tmp_path / "profiles", tmp_path / "db.sqlite") as client:
        ready = wait_ready(client)
    assert ready["random_weights"] is True and ready["weights_id"] == "random:seed=0"


def wait_js(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until true (under the page's CSP: no string predicates)."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs Debian's chromium)")
def test_the_page_shows_composites_originals_records_and_a_random_weights_banner(tmp_path, rng):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    examples = ROOT / "examples"
    holdout = []
    for i in range(6):
        holdout.append(tmp_path / f"h{i}.png")
        Image.fromarray(textured(rng, 96, 128)).save(holdout[-1])
    for folder in ("line1", "line2"):  # two photos named 000.png
        (tmp_path / folder).mkdir()
        Image.fromarray(textured(rng, 96, 128)).save(tmp_path / folder / "000.png")
    prof = tmp_path / "profiles" / "plate"
    model = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]
    good = str(examples / "good_plate.png")
    assert main(["profile", "create", "--object", "metal plate", "--good", good, "--out", str(prof), *model]) == 0
    assert main(["profile", "calibrate", str(prof), "--good", *map(str, holdout), "--target-fpr", "0.2",
                 "--review-fpr", "0.5", "--device", "cpu"]) == 0  # fmt: skip
    proc, url = start_server(tmp_path / "profiles", log=tmp_path / "server.log")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []  # script errors, and failed requests but the browser's own favicon.ico
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert page.is_visible("#banner") and page.inner_text("#banner").startswith("RANDOM WEIGHTS")
            info = page.inner_text("#profile-info")
            t, review = re.search(r"threshold ([\d.]+) · review from ([\d.]+)", info).groups()
            assert t != review  # as many digits as it takes to tell them apart
            legend = page.evaluate("document.querySelector('#legend').toDataURL()")
            assert len(legend) > 2000  # the heat scale is drawn
            files = [str(examples / "scratched_plate.png"), str(tmp_path / "line1" / "000.png"),
                     str(tmp_path / "line2" / "000.png")]  # fmt: skip
            page.set_input_files("#inspect-files", files)
            wait_js(page, "document.querySelectorAll('.card canvas').length === 3")
            wait_js(page, "document.querySelector('#inspect-msg').textContent.includes('3 inspected')")
            names = page.eval_on_selector_all(".card .name", "els => els.map((e) => e.textContent)")
            assert sorted(names) == ["000.png", "000.png (2)", "scratched_plate.png"]
            sizes = page.eval_on_selector_all(".card canvas", "els => els.map((c) => [c.width, c.height])")
            assert all(w >= 2 * h and h >= 256 for w, h in sizes), sizes  # photo | heat | mask, readable
            # the original photo on click
            page.click(".card:has(.name:text-is('scratched_plate.png')) canvas")
            page.wait_for_selector("#photo-dialog[open]")
            wait_js(page, "document.querySelector('#photo-full').naturalWidth === 256")
            page.click("#photo-dialog button")
            # a label without any region above the threshold says so: a threshold between the map's peak and the score
            score, peak = page.evaluate(
                "(() => { const item = state.results.find((i) => i.result.filename === 'scratched_plate.png');"
                " return [item.result.score, item.peak]; })()"
            )
            assert peak + 0.002 < score, (peak, score)  # the seeded tiny model: the image score beyond the map's peak
            card = page.locator(".card", has=page.locator(".name", has_text="scratched_plate.png"))
            assert card.locator(".note").inner_text() == ""
            page.fill("#threshold", f"{np.ceil((peak + 0.0005) * 1000) / 1000:.3f}")
            assert card.locator(".label").inner_text() == "anomalous"
            assert card.locator(".note").inner_text().startswith("no region above the threshold: the image score")
            history = page.locator("#history tbody tr")
            assert history.count() == 3
            history.first.click()  # a row opens its record
            page.wait_for_selector("#record-dialog[open]")
            record = page.inner_text("#record-fields")
            assert "filename" in record and "sha256" in record and "latency_ms" in record
            page.click("#record-dialog button")
            assert not errors, errors
            browser.close()
    finally:
        stop_server(proc)
