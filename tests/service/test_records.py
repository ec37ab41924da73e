"""Issue 11, records that survive: a deleted or replaced SQLite file, a locked database, readiness,
connect timeouts, paging bounds, CSV formula escaping, and one snapshot of the profile per answer."""

from __future__ import annotations

import base64
import csv
import io
import math
import os
import shutil
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage

from helpers.service import app_for, both_databases, images, make_profiles, record, wait_ready
from winclip.cli import main
from winclip.inspection.decisions import label_of
from winclip.service.db import DatabaseUnavailableError, Recorder
from winclip.spreadsheet import safe_cell

db_url = both_databases()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("records") / "profiles"
    make_profiles(folder)
    return folder


def predict(c: TestClient, blob: bytes, name: str = "a.png", profile: str = "bottle", query: str = ""):
    return c.post(f"/v1/profiles/{profile}/predict{query}", files=[("images", (name, blob, "image/png"))])


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_while_serving_fails_loudly(folder, tmp_path, how):
    db = tmp_path / "inspections.sqlite"
    blob = images(1, 1)[0]
    with app_for(folder, f"sqlite:///{db}") as c:
        wait_ready(c)
        assert predict(c, blob).status_code == 200
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if how == "replaced":
            sqlite3.connect(db).execute("create table other (x)").connection.close()
        r = predict(c, blob)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert f"the database file {db} was" in r.json()["detail"] and "none is answered" in r.json()["detail"]
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and "the record is unavailable" in ready.json()["detail"]
        assert c.get("/v1/inspections").status_code == 503
        assert c.get("/v1/inspections.csv").status_code == 503
        assert predict(c, blob).status_code == 503  # stays failed: never 200 for an unwritten row


def test_a_locked_database_is_503_and_readiness_says_so_until_it_is_free(folder, tmp_path):
    db = tmp_path / "locked.sqlite"
    blob = images(2, 1)[0]
    with app_for(folder, f"sqlite:///{db}", db_busy_timeout_ms=200) as c:
        wait_ready(c)
        assert predict(c, blob).status_code == 200
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            r = predict(c, blob)
            assert r.status_code == 503 and "database is locked" in r.json()["detail"], r.text
            ready = c.get("/health/ready")
            assert ready.status_code == 503 and "database is locked" in ready.json()["detail"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert c.get("/health/ready").status_code == 200
        assert predict(c, blob).status_code == 200
        assert c.get("/v1/inspections").json()["total"] == 2  # the refused answer left no row


def test_offsets_beyond_a_64_bit_integer_are_422(folder, db_url):
    with app_for(folder, db_url) as c:
        wait_ready(c)
        r = c.get(f"/v1/inspections?offset={2**63}")
        assert r.status_code == 422 and "offset" in r.json()["detail"]
        r = c.get(f"/v1/inspections?offset={2**63 - 1}&profile=nobody")
        assert r.status_code == 200 and r.json()["items"] == []


def test_csv_export_escapes_formula_cells(folder, tmp_path):
    names = ["=HYPERLINK(A1).png", "+1.png", "-2.png", "@SUM(A1).png", "ok.png"]
    with app_for(folder, f"sqlite:///{tmp_path / 'csv.sqlite'}") as c:
        wait_ready(c)
        for i, name in enumerate(names):
            assert predict(c, images(10 + i, 1)[0], name).status_code == 200
        rows = list(csv.DictReader(io.StringIO(c.get("/v1/inspections.csv").text)))
    assert [r["filename"] for r in rows] == ["'" + n for n in names[:4]] + ["ok.png"]
    assert all(not r["regions"].startswith(("=", "+", "-", "@")) for r in rows)
    assert float(rows[0]["score"]) >= 0  # numbers stay numbers
    starts = ["=", "+", "-", "@", "\t", "\r"]
    assert [safe_cell(s + "x") for s in starts] == ["'" + s + "x" for s in starts]
    assert [safe_cell(v) for v in ("x=1", "", -0.5, 3, None)] == ["x=1", "", -0.5, 3, None]


HUNG = 60  # seconds: far above the 1 s timeout on a loaded machine, far below a connection that never ends


def test_an_unresponsive_postgresql_times_out_at_start(tmp_path, capsys):
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"postgresql://winclip@127.0.0.1:{silent.getsockname()[1]}/x"
    try:
        t0 = time.monotonic()
        with pytest.raises(sa.exc.OperationalError):
            Recorder(url, connect_timeout_s=1)
        assert time.monotonic() - t0 < HUNG  # it gave up: a silent server would hold a plain connect forever
        t0 = time.monotonic()
        assert main(["serve", "--profiles", str(tmp_path / "p"), "--db", url, "--db-timeout", "1"]) == 2
        assert time.monotonic() - t0 < HUNG
        err = capsys.readouterr().err
        assert "winclip serve: opening the database" in err and "--db: cannot open the database" in err
    finally:
        silent.close()


def test_the_recorder_refuses_to_write_into_a_deleted_file(tmp_path):
    rec = Recorder(f"sqlite:///{tmp_path / 'r.sqlite'}")
    rec.check()
    assert rec.record([record("p", datetime.now(timezone.utc), 1, "normal")]) == [1]
    os.unlink(tmp_path / "r.sqlite")
    with pytest.raises(DatabaseUnavailableError, match="was deleted while serving"):
        rec.check()
    with pytest.raises(DatabaseUnavailableError, match="was deleted while serving"):
        rec.record([record("p", datetime.now(timezone.utc), 2, "normal")])
    assert "was deleted while serving" in rec.last_error  # remembered: not ready until a write succeeds
    assert not (tmp_path / "r.sqlite").exists()  # nothing re-created the file behind the service's back
    rec.close()


# -- 8. one snapshot of the profile per answer -------------------------------------------------


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.mark.slow
def test_answers_stay_consistent_while_thresholds_change(tmp_path):
    folder = tmp_path / "profiles"
    made = make_profiles(folder)
    scale = made["bottle"].confidence_scale
    blobs = images(40, 6)
    stop = threading.Event()
    answers = []
    with app_for(folder, f"sqlite:///{tmp_path / 'c.sqlite'}", window_ms=5) as c:
        wait_ready(c)
        scores = [predict(c, b).json()["results"][0]["score"] for b in blobs]
        # thresholds that flip labels of these very images, changed as fast as the worker takes them
        cuts = sorted(scores)
        settings = [(cuts[1] + 1e-4, None), (cuts[3] + 1e-4, cuts[2]), (cuts[4] - 1e-4, cuts[0])]

        def patch() -> int:
            n = 0
            while not stop.is_set():
                t, review = settings[n % len(settings)]
                assert c.patch("/v1/profiles/bottle", json={"threshold": t, "review_threshold": review}).is_success
                n += 1
            return n

        def ask(i: int) -> None:
            r = predict(c, blobs[i % len(blobs)], f"q{i}.png", query="?include=mask,overlay")
            assert r.status_code == 200, r.text
            answers.append(r.json()["results"][0])

        with ThreadPoolExecutor(5) as pool:
            patcher = pool.submit(patch)
            list(pool.map(ask, range(120)))
            stop.set()
            patches = patcher.result()
        rows = {r["filename"]: r for r in c.get("/v1/inspections?limit=1000").json()["items"]}
    assert patches > 10 and len(answers) == 120
    seen = set()
    for a in answers:
        t, review = a["threshold"], a["review_threshold"]
        seen.add(t)
        assert a["label"] == label_of(a["score"], t, review)
        assert a["confidence"] == pytest.approx(1 / (1 + math.exp(-(a["score"] - t) / scale)), abs=1e-9)
        assert a["confidence_scale"] == scale
        mask = decode(a["mask"]) == 255
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        assert n == len(a["regions"])  # regions are the mask's components, at the same threshold
        row = rows[a["filename"]]
        assert (row["threshold"], row["label"], row["score"], row["regions"]) == (
            t,
            a["label"],
            a["score"],
            a["regions"],
        )
    assert len(seen) >= 2  # the thresholds did change under the requests


def test_stale_temp_folders_and_hidden_entries_are_not_served(folder, tmp_path):
    served = tmp_path / "p"
    shutil.copytree(folder / "zero", served / "zero")
    shutil.copytree(folder / "zero", served / ".zero.tmp-deadbeef")  # a save killed half-way
    with app_for(served, f"sqlite:///{tmp_path / 'h.sqlite'}") as c:
        wait_ready(c)
        ready = c.get("/health/ready").json()
        assert (ready["profiles"], ready["refused"]) == (["zero"], {})
