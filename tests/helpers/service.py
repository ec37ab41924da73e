"""Helpers shared by the service tests (no tests here): images, profiles, the app, a real server."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from helpers import TINY, make_model, textured
from winclip.inspection.inspector import Inspector
from winclip.inspection.profile import Profile
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig
from winclip.service.db import Record, database_url

ROOT = Path(__file__).resolve().parents[2]
LOCAL = "http://localhost"  # TestClient's base URL: without an API key the service answers loopback names only
PG_ENV = "WINCLIP_TEST_POSTGRES_URL"


def app_for(folder: Path, db: Path | str, **options) -> TestClient:
    """A TestClient (localhost) of the service over `folder`, tiny random ViT; `db`: a SQLite file or a URL."""
    db_url = db if isinstance(db, str) else f"sqlite:///{db}"
    config = ServiceConfig(profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=db_url, **options)
    return TestClient(create_app(config), base_url=LOCAL)


def wait_ready(client: TestClient, timeout: float = 60.0) -> dict:
    """Poll /health/ready until the model is loaded; its answer."""
    deadline = time.monotonic() + timeout
    while (r := client.get("/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, f"not ready after {timeout} s: {r.text}"
        time.sleep(0.02)
    return r.json()


def postgres_url() -> str:
    """The test PostgreSQL's URL (env WINCLIP_TEST_POSTGRES_URL); skips the test when unset or unreachable."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (.ci/run starts a PostgreSQL server and sets it)")
    engine = sa.create_engine(database_url(url), connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()  # reachable: nothing is created (each test makes its own schema)
    except sa.exc.SQLAlchemyError as exc:
        pytest.skip(f"PostgreSQL at {PG_ENV} cannot be reached: {str(exc).splitlines()[0]}")
    finally:
        engine.dispose()
    return url


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh, empty schema in the test PostgreSQL (skips without one): its URL, whose connections use only that
    schema (search_path), so a test sees only its own tables; dropped afterwards."""
    url = postgres_url()
    name = f"winclip_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(database_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        engine.dispose()


def both_databases():
    """A fixture, bound as `db_url = both_databases()` in a test module: each test runs with a SQLite file and
    with a fresh schema in the test PostgreSQL (skipped without one)."""

    @pytest.fixture(params=["sqlite", "postgresql"], name="db_url")
    def database(request, tmp_path) -> Iterator[str]:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'record.sqlite'}"
            return
        with postgres_schema() as url:
            yield url

    return database


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """A Prometheus exposition as (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def old_record(url: str, rows: int) -> sa.Table:
    """A database as winclip made it before its schema was versioned (`metadata.create_all` of the table below,
    copied from db.py as it was then, and no alembic_version table), holding `rows` rows."""
    old = sa.MetaData()
    table = sa.Table(
        "inspections",
        old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("profile", sa.String(64), nullable=False, index=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("label", sa.String(16), nullable=False, index=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("regions", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    engine = sa.create_engine(database_url(url))
    old.create_all(engine)
    row = dict(profile="old", image_sha256="0" * 64, score=0.25, threshold=0.5, label="normal", confidence=0.1)
    with engine.begin() as conn:
        for i in range(rows):
            time_i = sa.func.now() if engine.dialect.name == "postgresql" else sa.func.datetime("now")
            conn.execute(table.insert().values(time=time_i, filename=f"old{i}.png", regions=[], latency_ms=1.0, **row))
    engine.dispose()
    return table


def png_bytes(array: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def images(seed: int, n: int, size: tuple[int, int] = (64, 64)) -> list[bytes]:
    """`n` distinct textured PNGs of `size` = (H, W)."""
    rng = np.random.default_rng(seed)
    return [png_bytes(textured(rng, *size)) for _ in range(n)]


def make_profiles(folder: Path) -> dict[str, Profile]:
    """A profiles folder: 'bottle' (2 shots, calibrated), 'zero' (zero-shot, ROI), 'tiled' (resize=tile),
    and 'alien' (another checkpoint: refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    refs = [Image.open(io.BytesIO(b)) for b in images(1, 2)]
    held_out = [Image.open(io.BytesIO(b)) for b in images(2, 4)]
    model = make_model()
    bottle = Profile.create(model, "bottle", refs).calibrate(model, held_out[:3], held_out[3:], target_fpr=0.3)
    roi = np.zeros((64, 64), dtype=np.uint8)
    roi[8:40, 8:40] = 1
    zero = Profile.create(make_model(), "screw", roi=roi, threshold=0.3)
    tiled = Profile.create(make_model(resize="tile"), "cable", refs[:1])
    alien = dataclasses.replace(Profile.create(make_model(), "nut"), weights_id="sha256:" + "0" * 64)
    out = {"bottle": bottle, "zero": zero, "tiled": tiled, "alien": alien}
    for name, profile in out.items():
        profile.save(folder / name)
    return out


def library_inspection(profile: Profile, data: bytes):
    """What the library computes for one image with a profile (a fresh model, no service)."""
    model = make_model(resize=profile.options.resize)
    (result,) = Inspector(profile, model).inspect([Image.open(io.BytesIO(data))])
    return result


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(profiles: Path, *extra: str, log: Path, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """`python -m winclip serve` with the tiny random model on a free loopback port; waits until ready."""
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "winclip",
        "serve",
        "--profiles",
        str(profiles),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backbone",
        TINY,
        "--pretrained",
        "none",
        "--device",
        "cpu",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"winclip serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"winclip serve did not get ready in {timeout:.0f} s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> int:
    """SIGTERM (graceful shutdown), then wait; returns the exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def record(profile: str, t: datetime, i: int, label: str) -> Record:
    return Record(
        time=t,
        profile=profile,
        filename=f"f{i}.png",
        image_sha256=f"{i:064x}",
        score=i / 10,
        threshold=0.5,
        label=label,
        confidence=0.25,
        regions=[{"x": i, "y": 0, "width": 1, "height": 2, "area": 2, "peak": 0.9}],
        latency_ms=3.5,
    )
