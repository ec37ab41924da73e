"""The inspection record on SQLite and on a real PostgreSQL (env WINCLIP_TEST_POSTGRES_URL)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from fastapi.testclient import TestClient

from helpers import TINY
from helpers.service import LOCAL, both_databases, images, library_inspection, make_profiles, record
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig
from winclip.service.db import Filters, Recorder, database_url, inspections

db_url = both_databases()


def test_database_urls_map_to_psycopg3():
    assert database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert database_url("postgres://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"


def test_recorder_pages_filters_and_exports(db_url):
    rec = Recorder(db_url)
    profile = f"t-{uuid.uuid4().hex[:12]}"  # a shared PostgreSQL database: only this test's rows
    t0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    rows = [record(profile, t0 + timedelta(minutes=i), i, "anomalous" if i % 3 == 0 else "normal") for i in range(7)]
    try:
        rec.record(rows[:3])
        rec.record(rows[3:])
        rec.record([])
        mine = Filters(profile=profile)
        assert rec.count(mine) == 7
        page = rec.page(mine, limit=3, offset=0)
        assert [r["filename"] for r in page] == ["f6.png", "f5.png", "f4.png"]  # newest first
        assert [r["filename"] for r in rec.page(mine, limit=3, offset=6)] == ["f0.png"]
        first = rec.page(mine, limit=1, offset=6)[0]
        assert datetime.fromisoformat(first["time"]) == t0
        assert (first["score"], first["regions"], first["latency_ms"]) == (0.0, rows[0].regions, 3.5)
        assert rec.count(Filters(profile=profile, label="anomalous")) == 3
        window = Filters(profile=profile, since=t0 + timedelta(minutes=2), until=t0 + timedelta(minutes=5))
        assert [r["filename"] for r in rec.page(window)] == [
            "f4.png",
            "f3.png",
            "f2.png",
        ]  # since inclusive, until exclusive
        other_zone = timezone(timedelta(hours=2))
        shifted = Filters(profile=profile, since=(t0 + timedelta(minutes=2)).astimezone(other_zone))
        assert rec.count(shifted) == 5
        naive_utc = Filters(profile=profile, until=(t0 + timedelta(minutes=1)).replace(tzinfo=None))
        assert rec.count(naive_utc) == 1
        text = "".join(rec.iter_csv(mine, chunk=2))
        table = list(csv.DictReader(io.StringIO(text)))
        assert [r["filename"] for r in table] == [f"f{i}.png" for i in range(7)]  # oldest first
        assert json.loads(table[1]["regions"]) == rows[1].regions
        assert float(table[4]["score"]) == pytest.approx(0.4)
    finally:
        with rec.engine.begin() as conn:
            conn.execute(inspections.delete().where(inspections.c.profile == profile))
        rec.close()


def test_the_service_records_every_prediction(db_url, tmp_path):
    folder = tmp_path / "profiles"
    made = make_profiles(folder)
    blobs = images(60, 3)
    config = ServiceConfig(profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=db_url)
    with TestClient(create_app(config), base_url=LOCAL) as c:
        deadline = time.monotonic() + 30
        while c.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get("/health/ready").json()["database"] == db_url.split(":")[0].split("+")[0]
        name = f"p{uuid.uuid4().hex[:10]}"
        assert c.post("/v1/profiles", data={"name": name, "object": "bottle"}).status_code == 201
        r = c.post(
            f"/v1/profiles/{name}/predict",
            files=[("images", (f"q{i}.png", b, "image/png")) for i, b in enumerate(blobs)],
        )
        assert r.status_code == 200
        answers = r.json()["results"]
        rec = c.app.state.winclip.recorder
        try:
            rows = sorted(rec.page(Filters(profile=name)), key=lambda x: x["filename"])
            assert [x["image_sha256"] for x in rows] == [hashlib.sha256(b).hexdigest() for b in blobs]
            assert [x["score"] for x in rows] == pytest.approx([a["score"] for a in answers], abs=1e-12)
            assert c.get(f"/v1/inspections?profile={name}").json()["total"] == 3
            csv_rows = list(csv.DictReader(io.StringIO(c.get(f"/v1/inspections.csv?profile={name}").text)))
            assert sorted(x["filename"] for x in csv_rows) == ["q0.png", "q1.png", "q2.png"]
            # the folder's own profiles are scored as the library does and recorded too
            r2 = c.post("/v1/profiles/bottle/predict", files=[("images", ("b.png", blobs[0], "image/png"))]).json()
            assert r2["results"][0]["score"] == pytest.approx(
                library_inspection(made["bottle"], blobs[0]).score, abs=1e-5
            )
            assert rec.count(Filters(profile="bottle", since=datetime.now(timezone.utc) - timedelta(minutes=5))) >= 1
        finally:
            with rec.engine.begin() as conn:
                conn.execute(inspections.delete().where(inspections.c.profile.in_([name, "bottle"])))
