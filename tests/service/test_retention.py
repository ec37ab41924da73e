"""Photos kept for audit (`--keep anomalous,review --keep-max-gb N`): names, the disk budget (oldest removed
first, also across restarts), one process per keep folder, the record's pointer, and nothing served over HTTP."""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from fastapi.testclient import TestClient
from PIL import Image

from helpers import TINY
from helpers.service import LOCAL, images, make_profiles
from winclip.cli import main
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig
from winclip.service.retention import Keeper, KeepError

T0 = datetime(2026, 11, 5, 10, 11, 12, 123456, tzinfo=timezone.utc)
LABELS = frozenset({"anomalous", "review"})


def keep(keeper: Keeper, record_id: int, minutes: float, size: int = 100, name: str = "part.png"):
    return keeper.keep(
        record_id=record_id, time=T0 + timedelta(minutes=minutes), profile="bracket", label="anomalous",
        filename=name, photo=(b"p" * size, ".png"), overlay=b"o" * size,
    )  # fmt: skip


def kept_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def test_kept_photos_are_named_by_time_record_and_label(tmp_path):
    keeper = Keeper(tmp_path / "kept", LABELS, 10_000)
    path, evicted = keep(keeper, 42, 0, name="../../a part?.html")
    stem = "20261105T101112123456Z-42-anomalous-a_part_"
    assert path == str(tmp_path / "kept" / "bracket" / "2026-11-05" / f"{stem}.png") and evicted == []
    assert kept_files(tmp_path / "kept") == [f"{stem}-overlay.png", f"{stem}.png"]
    assert Path(path).read_bytes() == b"p" * 100
    assert (keeper.count, keeper.total) == (1, 200)
    local = T0.astimezone(timezone(timedelta(hours=-8)))  # names are in UTC whatever the time zone given
    path, _ = keeper.keep(
        record_id=43, time=local, profile="bracket", label="review", filename="x.png", photo=(b"q", ".jpg"),
        overlay=b"o",
    )  # fmt: skip
    assert Path(path).name == "20261105T101112123456Z-43-review-x.jpg"
    keeper.close()


def test_the_budget_removes_the_oldest_first_also_after_a_restart(tmp_path):
    folder = tmp_path / "kept"
    keeper = Keeper(folder, LABELS, 1000)  # five pairs of 200 bytes
    for i in range(5):
        path, evicted = keep(keeper, i, i)
        assert Path(path).is_file() and evicted == []
    assert keep(keeper, 5, 5)[1] == [0]  # the sixth pushes the oldest out
    assert keep(keeper, 6, -1) == (None, [])  # older than all: it goes first (its row will point at nothing)
    assert (keeper.total, keeper.count) == (1000, 5)
    path, evicted = keep(keeper, 7, 7, size=300)  # 600 bytes: the three oldest go
    assert evicted == [1, 2, 3] and Path(path).is_file() and keeper.total == 600 + 2 * 200
    (folder / "bracket" / "notes.txt").write_text("not a kept photo: left alone, not counted")
    keeper.close()
    again = Keeper(folder, LABELS, 1000)
    assert (again.count, again.total) == (3, 1000)
    assert [e.record_id for e in again.entries] == [4, 5, 7]
    assert keep(again, 8, 8)[1] == [4]
    assert keep(again, 9, 9, size=10_000) == (None, [])  # larger than the whole budget: not kept, nothing removed
    assert [e.record_id for e in again.entries] == [5, 7, 8] and len(kept_files(folder)) == 2 * 3 + 1
    assert (folder / "bracket" / "notes.txt").exists()
    again.close()


def test_one_process_per_keep_folder(tmp_path):
    first = Keeper(tmp_path / "kept", LABELS, 1000)
    with pytest.raises(KeepError, match="is in use by another winclip serve; give each replica its own --keep-dir"):
        Keeper(tmp_path / "kept", LABELS, 1000)
    first.close()
    Keeper(tmp_path / "kept", LABELS, 1000).close()  # free again


def test_the_service_keeps_anomalous_photos_within_the_budget(tmp_path):
    folder = tmp_path / "profiles"
    make_profiles(folder)
    budget = 40_000
    config = ServiceConfig(
        profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=f"sqlite:///{tmp_path / 'k.sqlite'}",
        keep=LABELS, keep_max_bytes=budget, keep_dir=tmp_path / "kept",
    )  # fmt: skip
    blobs = images(33, 6)
    with TestClient(create_app(config), base_url=LOCAL) as c:
        deadline = time.monotonic() + 60
        while c.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.patch("/v1/profiles/zero", json={"threshold": 0.001}).status_code == 200  # every photo anomalous
        assert c.patch("/v1/profiles/bottle", json={"threshold": 1.0}).status_code == 200  # every photo normal
        ids = []
        for i, blob in enumerate(blobs[:5]):
            name = "../evil.html" if i == 4 else f"part{i}.png"
            r = c.post("/v1/profiles/zero/predict", files=[("images", (name, blob, "image/png"))])
            assert r.json()["results"][0]["label"] == "anomalous"
            ids.append(r.json()["results"][0]["id"])
        normal = c.post("/v1/profiles/bottle/predict", files=[("images", ("fine.png", blobs[5], "image/png"))])
        assert normal.json()["results"][0]["label"] == "normal"
        rows = {r["id"]: r for r in c.get("/v1/inspections").json()["items"]}
        metrics = c.get("/metrics").text
        keeper = c.app.state.winclip.keeper
        held = (keeper.count, keeper.total)
        assert c.get("/kept/zero").status_code == 404 and c.get("/static/../kept").status_code == 404
    kept = [rows[i]["kept"] for i in ids]
    assert rows[normal.json()["results"][0]["id"]]["kept"] is None
    n = sum(k is not None for k in kept)
    assert 1 <= n < 5 and kept[: 5 - n] == [None] * (5 - n)  # the newest are kept, the oldest were removed
    on_disk = [p for p in (tmp_path / "kept").rglob("*") if p.is_file() and p.name != ".lock"]
    assert len(on_disk) == 2 * n and sum(p.stat().st_size for p in on_disk) == held[1] <= budget and held[0] == n
    for i in range(5 - n, 5):
        photo = Path(kept[i])
        assert photo.read_bytes() == blobs[i] and photo.suffix == ".png"  # the upload, named by its decoded format
        assert photo.name.endswith(f"-{ids[i]}-anomalous-{'evil' if i == 4 else f'part{i}'}.png")
        overlay = Image.open(io.BytesIO(photo.with_name(photo.stem + "-overlay.png").read_bytes()))
        assert overlay.size == (64, 64)
    assert f"winclip_kept_photos {float(n)}" in metrics and f"winclip_kept_bytes {float(held[1])}" in metrics
    assert f"winclip_kept_evicted_total {float(5 - n)}" in metrics


def test_keep_and_sync_options_are_checked_in_one_line(tmp_path, capsys):
    base = ["serve", "--profiles", str(tmp_path / "p"), "--backbone", TINY, "--pretrained", "none"]
    for extra, text in (
        (["--keep", "anomalous"], "--keep needs --keep-max-gb N (> 0)"),
        (["--keep", "broken,review", "--keep-max-gb", "1"], "--keep (keep): broken: give labels among"),
        (["--keep-max-gb", "1"], "--keep-max-gb and --keep-dir need --keep LABELS"),
        (["--sync-interval", "0"], "--sync-interval (sync_interval_s) must be > 0.0, got 0.0"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err, err
    held = Keeper(tmp_path / "kept", LABELS, 1000)
    try:
        args = ["--keep", "anomalous", "--keep-max-gb", "1", "--keep-dir", str(tmp_path / "kept")]
        assert main(base + args) == 2
        assert "is in use by another winclip serve" in capsys.readouterr().err
    finally:
        held.close()
