"""Issue 11, security: the API key, cross-site requests, safe downloads and headers, the memory budget."""

from __future__ import annotations

import dataclasses
import io
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from fastapi.testclient import TestClient
from PIL import Image

from helpers import TINY
from helpers.service import LOCAL, app_for, images, make_profiles, wait_ready
from winclip.cli import main
from winclip.inspection.profile import Profile
from winclip.inspection.render import map_image, mask_image, overlay
from winclip.options import ModelSpec
from winclip.service import security
from winclip.service.app import create_app
from winclip.service.budget import estimate_bytes
from winclip.service.config import ServiceConfig

KEY = "k3y-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("secure") / "profiles"
    make_profiles(folder)
    return folder


@pytest.fixture(scope="module")
def client(folder, tmp_path_factory):
    with app_for(folder, tmp_path_factory.mktemp("db") / "s.sqlite", api_key=KEY) as c:
        wait_ready(c)
        yield c


def png_named(name: str, seed: int = 0) -> tuple[str, tuple[str, bytes, str]]:
    return ("good", (name, images(seed, 1)[0], "image/png"))


# -- 1. authentication ---------------------------------------------------------------------


def test_every_v1_endpoint_needs_the_key_and_health_stays_open(client, folder, monkeypatch):
    compared = []
    real = security.hmac.compare_digest
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    blob = images(3, 1)[0]
    calls = [
        ("GET", "/v1/profiles", {}),
        ("GET", "/v1/profiles/bottle", {}),
        ("GET", "/v1/profiles/bottle/references/0", {}),
        ("PATCH", "/v1/profiles/bottle", {"json": {"threshold": 1.0}}),
        ("POST", "/v1/profiles", {"data": {"name": "intruder", "object": "x"}}),
        ("POST", "/v1/profiles/bottle/predict", {"files": [("images", ("a.png", blob, "image/png"))]}),
        ("GET", "/v1/inspections", {}),
        ("GET", "/v1/inspections.csv", {}),
    ]
    assert len(calls) == 8
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Basic {KEY}"}):
        for method, path, kwargs in calls:
            r = client.request(method, path, headers=headers, **kwargs)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["detail"]
    assert compared  # the key is compared with hmac.compare_digest (constant time)
    assert Profile.load(folder / "bottle").threshold < 1.0 and not (folder / "intruder").exists()
    for path in ("/health/live", "/health/ready", "/", "/docs", "/openapi.json", "/static/app.js"):
        assert client.get(path).status_code == 200, path
    assert client.get("/v1/profiles", headers=AUTH).status_code == 200
    assert client.get("/v1/profiles", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    scheme = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert list(scheme.values())[0]["scheme"] == "bearer"


def test_serve_refuses_a_network_address_without_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WINCLIP_API_KEY", raising=False)
    for host in ("0.0.0.0", "192.168.1.20", "::", "plant-pc"):
        assert main(["serve", "--profiles", str(tmp_path / "p"), "--host", host]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--host {host} without an API key" in err
        assert "--api-key-file FILE or WINCLIP_API_KEY" in err and "--insecure-no-auth" in err
    (tmp_path / "short").write_text("abc\n")
    assert main(["serve", "--profiles", str(tmp_path / "p"), "--api-key-file", str(tmp_path / "short")]) == 2
    assert "at least 16 printable ASCII characters" in capsys.readouterr().err
    assert main(["serve", "--profiles", str(tmp_path / "p"), "--api-key-file", str(tmp_path / "none")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    monkeypatch.setenv("WINCLIP_API_KEY", "short")
    assert main(["serve", "--profiles", str(tmp_path / "p"), "--host", "0.0.0.0"]) == 2
    assert "WINCLIP_API_KEY: the API key must be at least 16" in capsys.readouterr().err


def test_key_matching():
    assert security.key_matches(KEY, f"Bearer {KEY}") and security.key_matches(KEY, f"BEARER  {KEY} ")
    for header in (None, "", KEY, f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", f"Token {KEY}", "Bearer"):
        assert not security.key_matches(KEY, header), header
    assert [security.is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost")] == [True] * 5
    assert [security.is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", "")] == [False] * 5


# -- 1. cross-site requests -----------------------------------------------------------------


def test_cross_origin_changes_are_refused(client, folder):
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:8001"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    assert len(foreign) == 5
    for extra in foreign:
        r = client.post(
            "/v1/profiles",
            headers={**AUTH, **extra},
            data={"name": "csrf", "object": "bottle"},
            files=[png_named("a.png")],
        )
        assert r.status_code == 403 and "refused" in r.json()["detail"], (extra, r.text)
        r = client.patch("/v1/profiles/bottle", headers={**AUTH, **extra}, json={"threshold": 1.0})
        assert r.status_code == 403, extra
    assert not (folder / "csrf").exists() and Profile.load(folder / "bottle").threshold < 1.0
    assert client.get("/v1/profiles", headers={**AUTH, "Origin": "http://evil.example"}).status_code == 200
    same = {**AUTH, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    r = client.post("/v1/profiles", headers=same, data={"name": "samesite", "object": "bottle"})
    assert r.status_code == 201, r.text


def test_without_a_key_only_loopback_host_names_are_answered(folder, tmp_path):
    with app_for(folder, tmp_path / "x.sqlite") as c:
        wait_ready(c)
        assert c.get("/v1/profiles").status_code == 200  # no key: open, on loopback
        for host in ("evil.example", "evil.example:8000", "192.168.1.5"):  # a DNS-rebinding page's name
            r = c.get("/v1/profiles", headers={"Host": host})
            assert r.status_code == 403 and "DNS rebinding" in r.json()["detail"], host
        assert c.get("/v1/profiles", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_insecure_no_auth_answers_any_host_name(folder, tmp_path):
    with app_for(folder, tmp_path / "x.sqlite", insecure_no_auth=True) as c:
        wait_ready(c)
        for host in ("10.0.0.5:8000", "station.plant.local"):  # the names a trusted network uses
            assert c.get("/v1/profiles", headers={"Host": host}).status_code == 200, host
        r = c.post("/v1/profiles", headers={"Origin": "http://evil.example"}, data={"name": "x", "object": "y"})
        assert r.status_code == 403  # cross-site changes stay refused


def test_an_unexpected_error_is_a_500_with_the_security_headers(folder, tmp_path):
    config = ServiceConfig(profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=f"sqlite:///{tmp_path}/e")
    app = create_app(config)

    @app.get("/boom")
    def boom():
        raise RuntimeError("disk on fire\nsecond line")

    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal error: RuntimeError: disk on fire"}
    assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in r.headers


# -- 2. safe downloads and headers -----------------------------------------------------------


def test_references_keep_the_decoded_format_and_are_served_as_images(client, folder):
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(images(4, 1)[0])).save(jpeg, format="JPEG")
    files = [png_named("evil.html"), ("good", ("photo.png", jpeg.getvalue(), "image/png")), png_named("x.svg", 5)]
    r = client.post("/v1/profiles", headers=AUTH, data={"name": "xss", "object": "bottle"}, files=files)
    assert r.status_code == 201, r.text
    stored = sorted(p.name for p in (folder / "xss" / "references").iterdir())
    assert stored == ["000_evil.png", "001_photo.jpg", "002_x.png"]
    for i, kind in enumerate(("image/png", "image/jpeg", "image/png")):
        got = client.get(r.json()["references"][i]["url"], headers=AUTH)
        assert got.status_code == 200 and got.headers["content-type"] == kind
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]
    # a reference stored by an older version under an HTML name is never served
    served = client.app.state.winclip.station.get("xss")
    legacy = folder / "xss" / "references" / "000_evil.html"
    legacy.write_bytes(images(0, 1)[0])
    names = (str(legacy), *served.profile.reference_names[1:])
    old = dataclasses.replace(served, profile=dataclasses.replace(served.profile, reference_names=names))
    assert old.reference_file(0) is None and old.reference_file(1) is not None
    refused = client.post(
        "/v1/profiles", headers=AUTH, data={"name": "svg", "object": "x"}, files=[("good", ("a.svg", b"<svg/>", "i"))]
    )
    assert refused.status_code == 415 and "accepted: PNG, JPEG" in refused.json()["detail"]


def test_every_response_carries_nosniff_and_a_content_security_policy(client):
    blob = images(6, 1)[0]
    responses = {
        "page": client.get("/"),
        "script": client.get("/static/app.js"),
        "docs": client.get("/docs"),
        "openapi": client.get("/openapi.json"),
        "ready": client.get("/health/ready"),
        "401": client.get("/v1/profiles"),
        "403": client.post("/v1/profiles", headers={**AUTH, "Origin": "http://evil.example"}, data={}),
        "404": client.get("/v1/profiles/nope", headers=AUTH),
        "413": client.post("/v1/profiles/bottle/predict", headers={**AUTH, "content-length": str(10**10)}),
        "predict": client.post("/v1/profiles/bottle/predict", headers=AUTH, files=[("images", ("a.png", blob, "i"))]),
    }
    assert [r.status_code for r in responses.values()] == [200, 200, 200, 200, 200, 401, 403, 404, 413, 200]
    for name, r in responses.items():
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert "default-src 'none'" in r.headers["content-security-policy"], name
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], name
    page_csp = responses["page"].headers["content-security-policy"]
    assert "unsafe-inline" not in page_csp and "script-src 'self';" in page_csp
    html = responses["page"].text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either
    docs = responses["docs"].text
    assert not re.search(r"<script(?![^>]*\bsrc=)", docs) and "/docs-static/swagger-ui-bundle.js" in docs
    bundle = client.get("/docs-static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and '"5.' in bundle.text[:2_000_000]  # Swagger UI 5: reads OpenAPI 3.1


# -- 3. the memory budget ----------------------------------------------------------------------


def black_png(width: int, height: int) -> bytes:
    """An all-black PNG: tiny on disk, huge decoded."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_pixel_bomb_is_refused_from_its_header(folder, tmp_path, monkeypatch):
    bomb = black_png(7000, 7000)
    assert len(bomb) < 60_000
    decoded = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real(self))
    with app_for(folder, tmp_path / "b.sqlite", max_pixels=40_000_000) as c:
        wait_ready(c)
        decoded.clear()
        r = c.post("/v1/profiles/bottle/predict?include=overlay,map", files=[("images", ("bomb.png", bomb, "i"))])
        assert r.status_code == 413 and "bomb.png: image is 7000x7000 pixels, more than the limit" in r.text
        assert (7000, 7000) not in decoded  # refused from the header: never decoded


def test_the_budget_across_requests_answers_413_or_503_with_retry_after(folder, tmp_path):
    blob = images(7, 1)[0]  # 64 x 64
    one_image = estimate_bytes(Image.open(io.BytesIO(blob))) + len(blob)
    limits = dict(max_pixels=64 * 64, max_bytes_in_flight=3 * one_image)
    with app_for(folder, tmp_path / "c.sqlite", **limits) as c:
        wait_ready(c)
        budget = c.app.state.winclip.budget
        one = [("images", ("a.png", blob, "i"))]
        assert c.post("/v1/profiles/bottle/predict", files=one).status_code == 200
        r = c.post("/v1/profiles/bottle/predict", files=one * 4)
        assert (
            r.status_code == 413 and f"{4 * one_image:,} bytes of memory" in r.text and f"{3 * one_image:,}" in r.text
        )
        with budget.reserve(2 * one_image, "held"), budget.reserve(one_image, "held"):  # other requests in flight
            r = c.post("/v1/profiles/bottle/predict", files=one)
            assert r.status_code == 503 and r.headers["retry-after"] == "2" and "memory budget" in r.text
            r = c.post("/v1/profiles", data={"name": "big", "object": "x"}, files=[("good", ("g.png", blob, "i"))])
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert budget.in_flight == 0 and budget.peak == 3 * one_image
        assert c.post("/v1/profiles/bottle/predict", files=one).status_code == 200
        assert budget.in_flight == 0  # released after each answer


def test_drawing_a_large_result_stays_in_bounded_memory(rng):
    h, w = 3000, 4000  # 12 MP: the old float64 pipeline needed about 8 x 12M x 8 bytes at once
    score_map = rng.random((h, w), dtype=np.float32)
    photo = Image.fromarray(np.zeros((h, w, 3), np.uint8))
    for draw, output in ((lambda: overlay(photo, score_map, 0.3), 3), (lambda: mask_image(score_map, 0.3), 1)):
        tracemalloc.start()
        picture = draw()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak - output * h * w < 64 * 2**20, f"{(peak - output * h * w) / 2**20:.0f} MiB besides the output"
        assert picture.size == (w, h)
    tracemalloc.start()
    map_image(score_map)
    assert tracemalloc.get_traced_memory()[1] - h * w < 64 * 2**20
    tracemalloc.stop()
