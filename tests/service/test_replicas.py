"""Issue 14, service replicas: several services on one database and one profiles folder serve the same profiles.

In-process (two apps, one SQLite file, fast): a change through one replica is served by the other within the
sync interval; concurrent changes are applied one on top of the other (no lost update, If-Match refuses a stale
one). With the CI PostgreSQL: two real `winclip serve` processes on loopback, started together on a database
made by the previous (unversioned) schema, which one of them migrates while the other waits.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import TINY
from helpers.service import (
    LOCAL,
    images,
    make_profiles,
    metric,
    metric_samples,
    old_record,
    postgres_schema,
    start_server,
    stop_server,
)
from winclip.inspection.profile import Profile
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig
from winclip.service.db import database_url
from winclip.service.migrate import head

httpx = pytest.importorskip("httpx")

SYNC_S = 0.2  # the in-process replicas' --sync-interval
SYNC_PROCESS_S = 0.5  # the serve processes' --sync-interval
PROPAGATIONS = 8  # changes timed from one replica to the other
KEY = "replica-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
STEP = 0.01  # each concurrent increment of a threshold
PREDICT_ROUTE = "/v1/profiles/{name}/predict"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll `check` until true; the seconds it took (AssertionError naming `what` after `timeout`)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def replica(folder: Path, db: str) -> TestClient:
    config = ServiceConfig(
        profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=db, sync_interval_s=SYNC_S, window_ms=5
    )
    return TestClient(create_app(config), base_url=LOCAL)


def increment(client, name: str, times: int, deadline: float) -> int:
    """Add STEP to the threshold `times` times, each a read and a PATCH with If-Match, retried when refused
    (412: another writer came first, or this replica has not seen the last change yet); the refusals."""
    refused = 0
    for _ in range(times):
        while True:
            assert time.monotonic() < deadline, "increments did not finish"
            seen = client.get(f"/v1/profiles/{name}")
            body = {"threshold": round(seen.json()["threshold"] + STEP, 6)}
            r = client.patch(f"/v1/profiles/{name}", json=body, headers={"If-Match": seen.headers["ETag"]})
            if r.status_code == 200:
                break
            assert r.status_code == 412, r.text
            refused += 1
            time.sleep(0.01)
    return refused


def concurrent_changes(clients: list, name: str, per_client: int) -> tuple[float, int, int]:
    """Increments from every client at once: (start threshold, start revision, refusals)."""
    start = clients[0].get(f"/v1/profiles/{name}").json()
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(len(clients)) as pool:
        refused = sum(pool.map(lambda c: increment(c, name, per_client, deadline), clients))
    return start["threshold"], start["revision"], refused


def same_time_patches(a, b, name: str) -> None:
    """One replica sets the threshold, the other the review threshold, at the same moment, without If-Match."""
    barrier = threading.Barrier(2)

    def patch(client, body) -> int:
        barrier.wait()
        return client.patch(f"/v1/profiles/{name}", json=body).status_code

    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(patch, (a, b), ({"threshold": 0.8}, {"review_threshold": 0.1})))
    assert codes == [200, 200]


def test_two_replicas_in_one_process_follow_each_other(tmp_path):
    folder = tmp_path / "profiles"
    made = make_profiles(folder)
    db = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    blob = images(90, 1)[0]
    with replica(folder, db) as a, replica(folder, db) as b:
        for c in (a, b):
            wait_for(lambda c=c: c.get("/health/ready").status_code == 200, "ready")
        assert a.get("/v1/profiles/bottle").json()["revision"] == b.get("/v1/profiles/bottle").json()["revision"] == 1
        # a threshold changed through A is used by B within the sync interval (plus reading the files)
        r = a.patch("/v1/profiles/zero", json={"threshold": 0.123})
        assert r.status_code == 200 and r.json()["revision"] == 2
        took = wait_for(lambda: b.get("/v1/profiles/zero").json()["threshold"] == 0.123, "B follows A's PATCH")
        assert took < 5, took
        answer = b.post("/v1/profiles/zero/predict", files=[("images", ("x.png", blob, "image/png"))]).json()
        assert answer["results"][0]["threshold"] == 0.123
        # a profile created through B is served by A (loaded and warmed there)
        assert b.post("/v1/profiles", data={"name": "made-on-b", "object": "bottle"}).status_code == 201
        wait_for(lambda: a.get("/v1/profiles/made-on-b").status_code == 200, "A serves B's new profile")
        assert "made-on-b" in a.get("/health/ready").json()["profiles"]
        # concurrent read-modify-write from both replicas: every increment lands, none is lost
        threshold, revision, _ = concurrent_changes([a, b, a, b], "bottle", 3)
        for c in (a, b):
            wait_for(lambda c=c: c.get("/v1/profiles/bottle").json()["revision"] == revision + 12, "follows")
            assert c.get("/v1/profiles/bottle").json()["threshold"] == pytest.approx(threshold + 12 * STEP, abs=1e-5)
        assert Profile.load(folder / "bottle").threshold == pytest.approx(threshold + 12 * STEP, abs=1e-5)
        # two changes of different fields at the same moment: both kept, one on top of the other
        same_time_patches(a, b, "tiled")
        for c in (a, b):
            wait_for(lambda c=c: c.get("/v1/profiles/tiled").json()["revision"] == 3, "both changes seen")
            got = c.get("/v1/profiles/tiled").json()
            assert (got["threshold"], got["review_threshold"]) == (0.8, 0.1)
        # the refused profile stays refused on both, and is not reloaded over and over
        assert (
            "alien" in a.get("/health/ready").json()["refused"] and "alien" in b.get("/health/ready").json()["refused"]
        )
    assert made["zero"].threshold != 0.123


def test_a_profile_changed_on_disk_is_a_new_revision_at_the_next_start(tmp_path):
    folder = tmp_path / "profiles"
    made = make_profiles(folder)
    db = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    with replica(folder, db) as a:
        wait_for(lambda: a.get("/health/ready").status_code == 200, "ready")
        assert a.get("/v1/profiles/zero").json()["revision"] == 1
        made["zero"].with_thresholds(0.77).save(folder / "zero", overwrite=True)  # e.g. `winclip profile calibrate`
        with replica(folder, db) as b:  # B registers what it finds on disk as revision 2; A follows
            wait_for(lambda: b.get("/health/ready").status_code == 200, "ready")
            assert b.get("/v1/profiles/zero").json()["revision"] == 2
            wait_for(lambda: a.get("/v1/profiles/zero").json()["threshold"] == 0.77, "A follows the disk change")
            assert b.get("/v1/profiles/bottle").json()["revision"] == 1  # unchanged: same digest, same revision


def test_a_change_that_cannot_take_the_lock_is_503_and_changes_nothing(tmp_path):
    folder = tmp_path / "profiles"
    make_profiles(folder)
    db = tmp_path / "shared.sqlite"
    config = ServiceConfig(
        profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=f"sqlite:///{db}", db_busy_timeout_ms=200
    )
    with TestClient(create_app(config), base_url=LOCAL) as c:
        wait_for(lambda: c.get("/health/ready").status_code == 200, "ready")
        before = (folder / "zero" / "profile.json").read_bytes()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another replica holding the write lock, longer than the busy timeout
        try:
            r = c.patch("/v1/profiles/zero", json={"threshold": 0.9})
            assert r.status_code == 503 and r.headers["Retry-After"] == "2", r.text
            assert "the profile's revision cannot be written" in r.json()["detail"] and "locked" in r.json()["detail"]
            r = c.post("/v1/profiles", data={"name": "late", "object": "bottle"})
            assert r.status_code == 503 and not (folder / "late").exists()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (folder / "zero" / "profile.json").read_bytes() == before
        assert c.get("/v1/profiles/zero").json()["revision"] == 1
        assert c.patch("/v1/profiles/zero", json={"threshold": 0.9}).json()["revision"] == 2


# -- two real processes on the CI PostgreSQL ---------------------------------------------------------------


def metrics_of(url: str) -> dict[tuple[str, tuple], float]:
    """The replica's metrics, scraped with the key."""
    r = httpx.get(f"{url}/metrics", headers=AUTH)
    assert r.status_code == 200, r.text
    return metric_samples(r.text)


class Client:
    """One replica, with a count of what the test sent it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers=AUTH, timeout=60)
        self.images = 0  # valid images inspected
        self.predicts = 0  # predict requests
        self.unsupported = 0  # 415 answers

    def predict(self, profile: str, parts: list[tuple[str, bytes]]) -> httpx.Response:
        r = self.http.post(f"/v1/profiles/{profile}/predict", files=[("images", (n, b, "image/png")) for n, b in parts])
        self.predicts += 1
        if r.status_code == 200:
            self.images += len(parts)
        if r.status_code == 415:
            self.unsupported += 1
        return r

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def patch(self, path: str, **kwargs) -> httpx.Response:
        return self.http.patch(path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.http.post(path, **kwargs)


def start_replicas(folder: Path, db: str, tmp_path: Path) -> list[tuple]:
    """Two `winclip serve` processes on one database and folder, started at the same moment."""
    (tmp_path / "key").write_text(KEY)
    common = (
        "--db",
        db,
        "--api-key-file",
        str(tmp_path / "key"),
        "--threads",
        "1",
        "--sync-interval",
        str(SYNC_PROCESS_S),
    )

    def start(name: str) -> tuple:
        return start_server(folder, *common, log=tmp_path / f"{name}.log", timeout=180)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start, name) for name in ("a", "b")]
        started = []
        for f in futures:
            try:
                started.append(f.result())
            except RuntimeError:
                for proc, _ in started + [x.result() for x in futures if x is not f and x.exception() is None]:
                    stop_server(proc)
                raise
    return started


@pytest.mark.slow
def test_two_serve_processes_on_one_postgresql(tmp_path):
    folder = tmp_path / "profiles"
    make_profiles(folder)
    pool = images(91, 6)
    with postgres_schema() as db:
        old_record(db, rows=3)  # the previous schema: both replicas start on it, one migrates, the other waits
        (proc_a, url_a), (proc_b, url_b) = start_replicas(folder, db, tmp_path)
        a, b = Client(url_a), Client(url_b)
        try:
            upgraded = [
                name
                for name in ("a", "b")
                if "upgraded from the unversioned schema" in (tmp_path / f"{name}.log").read_text()
            ]
            assert len(upgraded) == 1, upgraded
            engine = sa.create_engine(database_url(db))
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == head()
                assert conn.exec_driver_sql("SELECT count(*) FROM inspections WHERE kept IS NULL").scalar_one() == 3
            # a PATCH through one replica is served by the other within the sync interval plus reading the profile
            lags = []
            for i in range(PROPAGATIONS):
                writer, reader = (a, b) if i % 2 == 0 else (b, a)
                threshold = round(0.2 + 0.01 * i, 6)
                assert writer.patch("/v1/profiles/zero", json={"threshold": threshold}).json()["revision"] == i + 2
                lags.append(
                    wait_for(
                        lambda r=reader, t=threshold: r.get("/v1/profiles/zero").json()["threshold"] == t, "follows"
                    )
                )
            assert max(lags) < SYNC_PROCESS_S + 5, lags
            assert b.predict("zero", [("p0.png", pool[0])]).json()["results"][0]["threshold"] == threshold
            print(
                f"\nreplicas: a PATCH on one replica was served by the other after {np.median(lags):.2f} s (median), "
                f"{max(lags):.2f} s (max) over {PROPAGATIONS} changes, --sync-interval {SYNC_PROCESS_S}"
            )
            # a browser behind a TLS load balancer that passes the scheme and the public Host on: same origin
            public = {"Host": "inspect.example", "Origin": "https://inspect.example"}
            body = {"review_threshold": 0.05}
            assert a.patch("/v1/profiles/zero", json=body, headers=public).status_code == 403  # scheme unknown
            forwarded = {**public, "X-Forwarded-Proto": "https"}  # as nginx sends it (from a trusted address)
            assert a.patch("/v1/profiles/zero", json=body, headers=forwarded).status_code == 200
            # a profile created through B is served by A
            good = [("good", ("g.png", pool[5], "image/png"))]
            assert b.post("/v1/profiles", data={"name": "from-b", "object": "bottle"}, files=good).status_code == 201
            wait_for(lambda: a.get("/v1/profiles/from-b").status_code == 200, "A serves B's new profile")
            assert a.predict("from-b", [("p1.png", pool[1])]).status_code == 200
            # concurrent increments from both replicas (two clients each): none lost
            threshold, revision, refused = concurrent_changes([a, b, a, b], "bottle", 3)
            for c in (a, b):
                wait_for(lambda c=c: c.get("/v1/profiles/bottle").json()["revision"] == revision + 12, "follows")
                assert c.get("/v1/profiles/bottle").json()["threshold"] == pytest.approx(
                    threshold + 12 * STEP, abs=1e-5
                )
            print(
                f"replicas: 12 concurrent increments through 2 replicas, none lost; {refused} If-Match refusals (412)"
            )
            same_time_patches(a.http, b.http, "tiled")
            for c in (a, b):
                wait_for(lambda c=c: c.get("/v1/profiles/tiled").json()["revision"] == 3, "both changes seen")
                got = c.get("/v1/profiles/tiled").json()
                assert (got["threshold"], got["review_threshold"]) == (0.8, 0.1)
            # traffic to both: one record per valid image, nothing for the broken ones
            for i in range(3):
                assert a.predict("bottle", [(f"a{i}-{k}.png", pool[k]) for k in range(2)]).status_code == 200
                assert b.predict("tiled", [(f"b{i}.png", pool[i + 2])]).status_code == 200
            assert a.predict("bottle", [("broken-a.png", b"not an image")]).status_code == 415
            assert b.predict("bottle", [("broken-b.png", b"not an image")]).status_code == 415
            with engine.connect() as conn:
                names = [r[0] for r in conn.exec_driver_sql("SELECT filename FROM inspections WHERE profile <> 'old'")]
            want = (
                ["p0.png", "p1.png"]
                + [f"a{i}-{k}.png" for i in range(3) for k in range(2)]
                + [f"b{i}.png" for i in range(3)]
            )
            assert sorted(names) == sorted(want)
            assert a.images + b.images == len(want)
            # each replica's /metrics counts what it served, and needs the key
            assert httpx.get(f"{url_a}/metrics").status_code == 401
            for c in (a, b):
                m = metrics_of(c.url)
                assert metric(m, "winclip_images_total") == c.images
                assert metric(m, "winclip_batch_size_sum") == c.images
                assert metric(m, "winclip_http_errors_total", status="415") == c.unsupported == 1
                assert metric(m, "winclip_http_request_duration_seconds_count", route=PREDICT_ROUTE) == c.predicts
                assert metric(m, "winclip_http_responses_total", route=PREDICT_ROUTE, status="200") == c.predicts - 1
            assert metric(metrics_of(url_a), "winclip_profile_reloads_total", profile="zero") == PROPAGATIONS // 2
            assert metric(metrics_of(url_a), "winclip_profile_reloads_total", profile="from-b") == 1
            engine.dispose()
        finally:
            a.http.close()
            b.http.close()
            codes = [stop_server(proc_a), stop_server(proc_b)]
        assert codes == [-signal.SIGTERM] * 2  # uvicorn re-raises SIGTERM after its graceful shutdown
        for name in ("a", "b"):
            log = (tmp_path / f"{name}.log").read_text()
            assert not re.search(r"Traceback|cannot follow", log), log[-3000:]
