"""The HTTP API through FastAPI's TestClient: every endpoint, every error status, scores vs the library."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from fastapi.testclient import TestClient
from PIL import Image

import helpers.service as support
from helpers import TINY
from helpers.service import LOCAL, free_port, images, library_inspection, make_profiles, png_bytes, wait_ready
from winclip.cli import main
from winclip.inspection.profile import Profile
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig
from winclip.service.names import check_name, safe_filename
from winclip.service.uploads import UploadError, decode_upload

LIMITS = dict(max_images=4, max_file_bytes=50_000, max_request_bytes=200_000)


def app_for(folder: Path, db: Path, **options) -> TestClient:
    """The service with this file's small upload limits."""
    return support.app_for(folder, db, **{**LIMITS, **options})


@pytest.fixture(scope="module")
def profiles(tmp_path_factory) -> tuple[Path, dict[str, Profile]]:
    folder = tmp_path_factory.mktemp("station") / "profiles"
    return folder, make_profiles(folder)


@pytest.fixture(scope="module")
def client(profiles, tmp_path_factory):
    folder, _ = profiles
    with app_for(folder, tmp_path_factory.mktemp("db") / "api.sqlite", window_ms=30) as c:
        wait_ready(c)
        yield c


def files(field: str, blobs: list[bytes], names: list[str] | None = None) -> list:
    names = names or [f"img{i}.png" for i in range(len(blobs))]
    return [(field, (n, b, "image/png")) for n, b in zip(names, blobs, strict=True)]


def decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def noise_png(seed: int, side: int) -> bytes:
    """An incompressible PNG of about 3·side² bytes."""
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


# -- pure helpers ---------------------------------------------------------------------------


def test_profile_names_are_confined_to_the_folder():
    assert [check_name(n) for n in ("bottle", "a", "Line-1_v2.0", "x" * 64)] == ["bottle", "a", "Line-1_v2.0", "x" * 64]
    for bad in ("", "..", "a..b", "../etc", "a/b", ".hidden", "-x", "x" * 65, "a b", "a\\b", "é"):
        with pytest.raises(ValueError, match="invalid profile name"):
            check_name(bad)
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\x\\my photo.png") == "my_photo.png"
    assert safe_filename("...") == "image"


def test_decode_upload_statuses():
    good = images(5, 1)[0]
    assert decode_upload(good, "a.png", min_size=8, max_pixels=10**6).size == (64, 64)
    cases = [
        (b"", 10**6, 422, "a.png: file is empty"),
        (b"not an image at all", 10**6, 415, "a.png: not an image file"),
        (good[: len(good) // 2], 10**6, 422, "a.png: cannot decode image"),
        (png_bytes(np.zeros((4, 4, 3), np.uint8)), 10**6, 422, "smaller than the minimum 8"),
        (good, 100, 413, "more than the limit of 100"),
    ]
    assert len(cases) == 5
    for data, max_pixels, status, text in cases:
        with pytest.raises(UploadError) as err:
            decode_upload(data, "a.png", min_size=8, max_pixels=max_pixels)
        assert (err.value.status, text in err.value.detail) == (status, True), err.value.detail


# -- health ---------------------------------------------------------------------------------


def test_health_lists_served_and_refused_profiles(client):
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready").json()
    assert ready["profiles"] == ["bottle", "tiled", "zero"]
    assert list(ready["refused"]) == ["alien"]
    assert "the profile was made with tiny-vit (sha256:000" in ready["refused"]["alien"]
    assert (ready["backbone"], ready["weights_id"], ready["database"]) == ("tiny-vit", "random:seed=0", "sqlite")
    assert set(ready["batching"]) == {"batches", "images", "largest"}
    docs = client.get("/docs")
    assert (
        docs.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    )
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200  # offline: served by the app
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/profiles",
        "/v1/profiles/{name}",
        "/v1/profiles/{name}/predict",
        "/v1/inspections",
        "/v1/inspections.csv",
    ):
        assert path in paths
    page = client.get("/")
    assert page.status_code == 200 and "winclip inspection station" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_not_ready_is_503_with_the_reason(tmp_path):
    config = ServiceConfig(profiles=tmp_path / "p", model=ModelSpec(TINY, str(tmp_path / "missing.pt"), device="cpu"))
    with TestClient(create_app(config), base_url=LOCAL) as c:
        deadline = time.monotonic() + 30
        while "could not be loaded" not in c.get("/health/ready").json()["detail"] and time.monotonic() < deadline:
            time.sleep(0.02)
        r = c.get("/health/ready")
        assert r.status_code == 503 and "could not be loaded" in r.json()["detail"]
        assert c.get("/health/live").status_code == 200
        assert c.get("/v1/profiles").status_code == 503
        assert c.post("/v1/profiles/x/predict", files=files("images", images(0, 1))).status_code == 503


# -- profiles -------------------------------------------------------------------------------


def test_get_profiles(client, profiles):
    folder, made = profiles
    listed = client.get("/v1/profiles").json()
    assert [p["name"] for p in listed["profiles"]] == ["bottle", "tiled", "zero"]
    assert list(listed["refused"]) == ["alien"]
    bottle = client.get("/v1/profiles/bottle").json()
    on_disk = Profile.load(folder / "bottle")
    assert bottle["digest"] == on_disk.digest()
    assert (bottle["shots"], bottle["object_name"], bottle["threshold"]) == (2, "bottle", on_disk.threshold)
    assert bottle["calibration"]["good"] == [c.score for c in on_disk.calibration.good]
    assert len(bottle["calibration"]["good"]) == 3 and len(bottle["calibration"]["bad"]) == 1
    assert [r["url"] for r in bottle["references"]] == [None, None]  # in-memory references: nothing to serve
    zero = client.get("/v1/profiles/zero").json()
    assert zero["roi"]["width"] == 64 and zero["roi"]["inside"] == pytest.approx(32 * 32 / 64**2)
    assert client.get("/v1/profiles/tiled").json()["options"]["resize"] == "tile"
    # which path scores each profile, and on what evidence (none here: the fp32 reference)
    assert {p["precision"] for p in listed["profiles"]} == {"torch-fp32"}
    assert bottle["precision_evidence"].startswith("auto: fp32, the profile has no precision evidence")


def test_profile_lookup_errors(client):
    assert client.get("/v1/profiles/nope").status_code == 404
    assert client.get("/v1/profiles/nope").json() == {"detail": "profile 'nope' not found"}
    r = client.get("/v1/profiles/alien")
    assert r.status_code == 409 and "refused at start-up" in r.json()["detail"]
    for bad in ("a..b", "-x", ".hidden"):
        r = client.get(f"/v1/profiles/{bad}")
        assert r.status_code == 422 and "invalid profile name" in r.json()["detail"]
    assert client.get("/v1/profiles/bottle/references/0").status_code == 404


# -- predict --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bottle", "zero", "tiled"])
def test_predict_matches_the_library(client, profiles, name):
    _, made = profiles
    blobs = images(10, 1) + [png_bytes(np.asarray(Image.open(io.BytesIO(images(11, 1, (48, 80))[0]))))]
    r = client.post(f"/v1/profiles/{name}/predict?include=mask,overlay,map", files=files("images", blobs))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    for blob, got in zip(blobs, results, strict=True):
        want = library_inspection(made[name], blob)
        h, w = want.map.shape
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert got["zero_shot"] == pytest.approx(want.zero_shot, abs=1e-5)
        assert (got["label"], got["threshold"], got["sha256"]) == (
            want.label,
            made[name].threshold,
            hashlib.sha256(blob).hexdigest(),
        )
        assert got["confidence"] == pytest.approx(want.confidence, abs=1e-4)
        assert [(g["x"], g["y"], g["width"], g["height"], g["area"]) for g in got["regions"]] == [
            (g.x, g.y, g.width, g.height, g.area) for g in want.regions
        ]
        assert (got["width"], got["height"]) == (w, h)
        mask = decode_png(got["mask"])
        assert mask.shape == (h, w)
        np.testing.assert_array_equal(mask == 255, want.map >= made[name].threshold)
        assert decode_png(got["overlay"]).shape == (h, w, 3)
        assert np.abs(decode_png(got["map"]).astype(float) - want.map * 255).max() <= 0.5 + 1e-3


def test_predict_errors(client):
    blob = images(3, 1)[0]
    cases = [
        (files("images", [b"GIF89a garbage"], ["bad.gif"]), "", 415, "bad.gif: not an image file"),
        (files("images", [blob[:200]], ["cut.png"]), "", 422, "cut.png: cannot decode image"),
        (files("images", [b""], ["empty.png"]), "", 422, "empty.png: file is empty"),
        (
            files("images", [png_bytes(np.zeros((4, 4, 3), np.uint8))], ["tiny.png"]),
            "",
            422,
            "tiny.png: image is 4x4 pixels",
        ),
        (files("images", [blob] * 5), "", 413, "5 images in one request; the limit is 4"),
        (
            files("images", [noise_png(0, 140)], ["big.png"]),
            "",
            413,
            "big.png: 59,013 bytes; the limit per file is 50,000",
        ),
        (files("images", [noise_png(i, 125) for i in range(5)]), "", 413, "request body of"),
        (files("images", [blob]), "?include=mask,heat", 422, "include: unknown heat"),
        ({"other": ("a.png", blob, "image/png")}, "", 422, "images: Field required"),
    ]
    assert len(cases) == 9
    for payload, query, status, text in cases:
        r = client.post(f"/v1/profiles/bottle/predict{query}", files=payload)
        assert r.status_code == status, (text, r.text)
        assert list(r.json()) == ["detail"] and text in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert client.post("/v1/profiles/nope/predict", files=files("images", [blob])).status_code == 404
    assert client.post("/v1/profiles/alien/predict", files=files("images", [blob])).status_code == 409
    assert client.post("/v1/profiles/a..b/predict", files=files("images", [blob])).status_code == 422


def test_chunked_body_over_the_limit_is_413(client):
    def body():
        yield b'--x\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
        for _ in range(30):
            yield b"\0" * 10_000

    r = client.post(
        "/v1/profiles/bottle/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 413 and "over the limit of 200,000 bytes" in r.json()["detail"]


def test_concurrent_requests_share_batches_across_profiles(profiles, tmp_path):
    folder, made = profiles
    blobs = images(20, 16)
    names = ["bottle", "zero"] * 8
    with app_for(folder, tmp_path / "b.sqlite", window_ms=100, max_batch=16) as c:
        wait_ready(c)
        with ThreadPoolExecutor(8) as pool:
            post = lambda a: c.post(f"/v1/profiles/{a[0]}/predict", files=files("images", [a[1]]))
            answers = list(pool.map(post, zip(names, blobs, strict=True)))
        stats = c.app.state.winclip.batcher.stats
        assert stats.largest >= 2  # requests were batched together
        assert stats.items == 16  # each image scored once
    assert len(answers) == 16
    for name, blob, r in zip(names, blobs, answers, strict=True):
        assert r.status_code == 200
        assert r.json()["results"][0]["score"] == pytest.approx(library_inspection(made[name], blob).score, abs=1e-5)


# -- creating and changing profiles -----------------------------------------------------------


def test_create_profile(client, profiles):
    folder, _ = profiles
    good = images(30, 2)
    roi = png_bytes(np.pad(np.full((32, 32, 3), 255, np.uint8), ((16, 16), (16, 16), (0, 0))))
    r = client.post(
        "/v1/profiles",
        data={
            "name": "bracket",
            "object": "metal bracket",
            "normal_states": ["{o} with a sticker"],
            "threshold": "0.4",
        },
        files=files("good", good, ["a b.png", "../../evil.png"]) + [("roi", ("roi.png", roi, "image/png"))],
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["name"], made["object_name"], made["shots"], made["threshold"]) == ("bracket", "metal bracket", 2, 0.4)
    assert "{o} with a sticker" in made["normal_states"] and made["roi"]["inside"] == pytest.approx(0.25)
    on_disk = Profile.load(folder / "bracket")
    assert made["digest"] == on_disk.digest()
    assert list(on_disk.reference_hashes) == [hashlib.sha256(b).hexdigest() for b in good]
    assert sorted(p.name for p in (folder / "bracket" / "references").iterdir()) == ["000_a_b.png", "001_evil.png"]
    assert not (folder.parent / "evil.png").exists()
    assert [x["name"] for x in made["references"]] == ["000_a_b.png", "001_evil.png"]
    assert client.get(made["references"][1]["url"]).content == good[1]
    assert client.get("/v1/profiles/bracket/references/2").status_code == 404
    assert "bracket" in client.get("/health/ready").json()["profiles"]
    query = images(31, 1)[0]
    got = client.post("/v1/profiles/bracket/predict", files=files("images", [query])).json()["results"][0]
    assert got["score"] == pytest.approx(library_inspection(on_disk, query).score, abs=1e-5)
    zero_shot = client.post("/v1/profiles", data={"name": "plain", "object": "cable"})
    assert zero_shot.status_code == 201 and zero_shot.json()["shots"] == 0


def test_create_profile_errors(client, profiles):
    folder, _ = profiles
    good = images(32, 1)
    empty_roi = png_bytes(np.zeros((8, 8, 3), np.uint8))
    cases = [
        ({"name": "bottle", "object": "x"}, [], 409, "profile 'bottle' exists already"),
        ({"name": "alien", "object": "x"}, [], 409, "exists already"),
        ({"name": "../evil", "object": "x"}, [], 422, "invalid profile name"),
        ({"name": "ok1", "object": "  "}, [], 422, "object: the object name is empty"),
        ({"name": "ok1"}, [], 422, "object: Field required"),
        ({"name": "ok1", "object": "x", "threshold": "2"}, [], 422, "threshold"),
        ({"name": "ok1", "object": "x"}, files("good", [b"junk"], ["j.png"]), 415, "j.png: not an image file"),
        ({"name": "ok1", "object": "x"}, files("good", good * 5), 413, "good: 5 images"),
        (
            {"name": "ok1", "object": "x"},
            files("good", good) + [("roi", ("r.png", empty_roi, "image/png"))],
            422,
            "ROI mask is empty",
        ),
    ]
    assert len(cases) == 9
    for data, payload, status, text in cases:
        r = client.post("/v1/profiles", data=data, files=payload or None)
        assert r.status_code == status, (text, r.text)
        assert text in r.json()["detail"]
    assert not (folder / "ok1").exists() and not (folder.parent / "evil").exists()


def test_patch_thresholds(client, profiles):
    folder, made = profiles
    blob = images(40, 1)[0]
    before = client.post("/v1/profiles/zero/predict", files=files("images", [blob])).json()["results"][0]
    t = before["score"] - 1e-3
    r = client.patch("/v1/profiles/zero", json={"threshold": t, "review_threshold": t / 2})
    assert r.status_code == 200 and (r.json()["threshold"], r.json()["review_threshold"]) == (t, t / 2)
    assert (Profile.load(folder / "zero").threshold, Profile.load(folder / "zero").review_threshold) == (t, t / 2)
    after = client.post("/v1/profiles/zero/predict", files=files("images", [blob])).json()["results"][0]
    assert (after["score"], after["threshold"], after["label"]) == (before["score"], t, "anomalous")
    assert after["confidence"] > 0.5
    # a field left out keeps its value; review_threshold null removes the band; every change is a new revision
    revision = r.json()["revision"]
    assert r.headers["ETag"] == f'"{revision}"' == client.get("/v1/profiles/zero").headers["ETag"]
    r = client.patch("/v1/profiles/zero", json={"review_threshold": t / 4})
    assert (r.json()["threshold"], r.json()["review_threshold"], r.json()["revision"]) == (t, t / 4, revision + 1)
    r = client.patch("/v1/profiles/zero", json={"review_threshold": None}, headers={"If-Match": f'"{revision + 1}"'})
    assert (r.json()["threshold"], r.json()["review_threshold"], r.json()["revision"]) == (t, None, revision + 2)
    stale = client.patch("/v1/profiles/zero", json={"threshold": 0.9}, headers={"If-Match": f'"{revision}"'})
    assert stale.status_code == 412 and f"at revision {revision + 2}, not {revision}" in stale.json()["detail"]
    assert Profile.load(folder / "zero").threshold == t  # refused: nothing written
    for body, text in (
        ({"threshold": 1.5}, "threshold must be in (0, 1]"),
        ({"threshold": 0.3, "review_threshold": 0.4}, "review threshold"),
        ({"threshold": "high"}, "threshold: Input should be a valid number"),
        ({"threshold": None}, "threshold: must be a number"),
        ({}, "give threshold and/or review_threshold"),
    ):
        r = client.patch("/v1/profiles/zero", json=body)
        assert r.status_code == 422 and text in r.json()["detail"], r.text
    r = client.patch("/v1/profiles/zero", json={"threshold": 0.5}, headers={"If-Match": "W/seven"})
    assert r.status_code == 422 and "If-Match" in r.json()["detail"]
    assert client.get("/v1/profiles/zero").json()["revision"] == revision + 2
    assert (
        client.patch(
            "/v1/profiles/zero", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.patch("/v1/profiles/nope", json={"threshold": 0.5}).status_code == 404
    assert client.patch("/v1/profiles/alien", json={"threshold": 0.5}).status_code == 409


# -- the record -----------------------------------------------------------------------------


def test_inspections_are_recorded_paged_filtered_and_exported(profiles, tmp_path):
    folder, made = profiles
    blobs = images(50, 7)
    with app_for(folder, tmp_path / "rec.sqlite") as c:
        wait_ready(c)
        start = datetime.now(timezone.utc)
        answers = [
            c.post(f"/v1/profiles/{n}/predict", files=files("images", [b])).json()["results"][0]
            for n, b in zip(["bottle"] * 5 + ["zero"] * 2, blobs, strict=True)
        ]
        c.post("/v1/profiles/bottle/predict", files=files("images", [b"junk"]))  # refused: not recorded
        everything = c.get("/v1/inspections").json()
        assert everything["total"] == 7 and len(everything["items"]) == 7
        assert [i["image_sha256"] for i in everything["items"]] == [a["sha256"] for a in answers][::-1]  # newest first
        row = everything["items"][-1]
        assert (row["profile"], row["filename"], row["label"], row["regions"]) == (
            "bottle",
            "img0.png",
            answers[0]["label"],
            answers[0]["regions"],
        )
        assert row["score"] == pytest.approx(answers[0]["score"]) and row["latency_ms"] > 0
        assert datetime.fromisoformat(row["time"]) >= start - timedelta(seconds=1)
        pages = [c.get(f"/v1/inspections?profile=bottle&limit=2&offset={o}").json() for o in (0, 2, 4)]
        assert [p["total"] for p in pages] == [5, 5, 5] and [len(p["items"]) for p in pages] == [2, 2, 1]
        assert [i["id"] for p in pages for i in p["items"]] == [
            i["id"] for i in everything["items"] if i["profile"] == "bottle"
        ]
        labels = {a["label"] for a in answers}
        assert sum(c.get(f"/v1/inspections?label={lab}").json()["total"] for lab in labels) == 7
        future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        assert c.get("/v1/inspections", params={"since": future}).json()["total"] == 0
        assert c.get("/v1/inspections", params={"until": future}).json()["total"] == 7
        assert c.get("/v1/inspections", params={"since": start.isoformat(), "profile": "zero"}).json()["total"] == 2
        exported = c.get("/v1/inspections.csv?profile=bottle")
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 5 and [r["image_sha256"] for r in rows] == [a["sha256"] for a in answers[:5]]
        for query, text in (
            ("limit=0", "limit"),
            ("limit=5000", "limit"),
            ("offset=-1", "offset"),
            ("label=bad", "label"),
            ("since=yesterday", "since"),
            ("profile=..", "profile"),
        ):
            r = c.get(f"/v1/inspections?{query}")
            assert r.status_code == 422 and text in r.json()["detail"], r.text
        assert c.get("/v1/inspections.csv?label=bad").status_code == 422


def test_serve_command_refuses_bad_options_before_loading(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["serve", "--profiles", str(tmp_path / "file")]) == 2
    assert "--profiles" in capsys.readouterr().err
    assert main(["serve", "--profiles", str(tmp_path / "p"), "--db", "nosuchdriver://x"]) == 2
    assert "--db: cannot open the database" in capsys.readouterr().err
    assert main(["serve", "--profiles", str(tmp_path / "p"), "--max-batch", "0"]) == 2
    assert "winclip: error: --max-batch (max_batch) must be >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", "--profiles", str(tmp_path / "p"), "--threads", "0"]) == 2
    assert "--threads must be in 1..1024, got 0" in capsys.readouterr().err
    for option, value in (("--batch-window-ms", "inf"), ("--max-upload-mb", "nan"), ("--keep-max-gb", "inf")):
        with pytest.raises(SystemExit) as stop:
            main(["serve", "--profiles", str(tmp_path / "p"), option, value])
        assert stop.value.code == 2
        assert f"argument {option}: must be a finite number, got '{value}'" in capsys.readouterr().err


def test_the_service_config_validates_itself(tmp_path):
    spec = ModelSpec(TINY, None, "cpu")
    ServiceConfig(tmp_path, spec)  # the defaults hold
    for field, value, text in (
        ("max_batch", 0, "--max-batch (max_batch) must be >= 1, got 0"),
        ("batch_size", 0, "--batch-size (batch_size) must be >= 1"),
        ("window_ms", float("inf"), "--batch-window-ms (window_ms) must be a finite number, got inf"),
        ("window_ms", 1e9, "--batch-window-ms (window_ms) must be <= 10,000.0"),
        ("sync_interval_s", 0.0, "--sync-interval (sync_interval_s) must be > 0.0"),
        ("db_connect_timeout_s", float("nan"), "--db-timeout (db_connect_timeout_s) must be a finite number"),
        ("max_bytes_in_flight", 10, "--memory-budget-mb (max_bytes_in_flight) must be >= 900,000,000"),
        ("max_bytes_in_flight", 2**50, "--memory-budget-mb (max_bytes_in_flight) must be <= 1,099,511,627,776"),
        ("max_file_bytes", 2**40, "--max-upload-mb (max_file_bytes) must be <= 4,294,967,296"),
        ("max_pixels", 10**12, "--max-megapixels (max_pixels) must be <= 1,000,000,000"),
        ("min_area", 10**12, "--min-area (min_area) must be <= 50,000,000"),
        ("sync_interval_s", 1e9, "--sync-interval (sync_interval_s) must be <= 3,600"),
        ("max_body_bytes_in_flight", 10, "--uploads-mb-in-flight (max_body_bytes_in_flight) must be >= 336,592,896"),
        ("max_batch", True, "--max-batch (max_batch) must be a finite number, got True"),
        ("keep", frozenset({"bad"}), "--keep (keep): bad: give labels among normal, review, anomalous"),
        ("keep", frozenset({"anomalous"}), "--keep needs --keep-max-gb N (> 0)"),
    ):
        with pytest.raises(ValueError) as err:
            ServiceConfig(tmp_path, spec, **{field: value})
        assert text in str(err.value) and "\n" not in str(err.value)


def test_serve_command_exits_2_when_the_model_cannot_be_loaded(tmp_path, capsys):
    args = [
        "serve",
        "--profiles",
        str(tmp_path / "p"),
        "--port",
        str(free_port()),
        "--backbone",
        TINY,
        "--pretrained",
        str(tmp_path / "missing.pt"),
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "winclip: error: the model could not be loaded" in err and "missing.pt" in err
