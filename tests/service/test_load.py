"""Load on a real `winclip serve` with an API key (loopback only): 8 concurrent clients, 400 requests mixing
valid images, corrupt files and oversize uploads; answers checked against the library, one database row per
valid image, flat memory, and a graceful shutdown that finishes and records in-flight requests."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

import torch
from PIL import Image

from helpers import make_model
from helpers.service import Inspector, images, make_profiles, png_bytes, rss_bytes, start_server, stop_server
from winclip.service.uploads import probe_upload

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUESTS = 400
MAX_UPLOAD = 50_000  # bytes (--max-upload-mb 0.0476...)
KEY = "load-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def in_flight(url: str) -> float:
    """The station's `winclip_memory_in_flight_bytes`: the memory budget the requests it is serving now hold."""
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    gauge = "winclip_memory_in_flight_bytes "
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(gauge))


def noise_png(seed: int, side: int) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def plan(i: int, pool: list[bytes]) -> tuple[str, list[tuple[str, bytes]], int, str]:
    """Request i: (profile, [(filename, bytes)], expected status, expected text of the detail).
    70% valid, 20% corrupt, 10% oversize."""
    kind = i % 10
    profile = ("bottle", "zero", "tiled")[i % 3]
    if kind < 7:
        return profile, [(f"ok{i}.png", pool[i % len(pool)])], 200, ""
    if kind == 7:
        return profile, [(f"junk{i}.png", b"\x89PNG not really " * 40)], 415, f"junk{i}.png: not an image file"
    if kind == 8:
        return profile, [(f"cut{i}.png", pool[i % len(pool)][:300])], 422, f"cut{i}.png: cannot decode image"
    if i % 20 == 9:
        return profile, [(f"huge{i}.png", noise_png(i, 140))], 413, f"huge{i}.png: 59,"
    return profile, [(f"many{i}_{k}.png", pool[k]) for k in range(5)], 413, "images: 5 images in one request"


def test_load_mixed_traffic(tmp_path):
    folder = tmp_path / "profiles"
    made = make_profiles(folder)
    pool = images(70, 12)
    decoded = [Image.open(io.BytesIO(b)) for b in pool]
    expected = {}
    for name in ("bottle", "zero", "tiled"):  # what the library computes for each image
        results = Inspector(made[name], make_model(resize=made[name].options.resize)).inspect(decoded)
        expected.update({(name, k): r.score for k, r in enumerate(results)})
    # one torch thread: on a shared 2-core machine two spinning OpenMP threads collapse whenever
    # another process takes a core, and the HTTP work needs the other core anyway
    (tmp_path / "key").write_text(KEY)
    proc, url = start_server(
        folder,
        "--api-key-file",
        str(tmp_path / "key"),
        "--max-upload-mb",
        str(MAX_UPLOAD / 2**20),
        "--max-images",
        "4",
        "--threads",
        "1",
        log=tmp_path / "server.log",
    )
    local = threading.local()
    failures: list[str] = []

    def send(i: int) -> tuple[float, int]:
        client = getattr(local, "client", None) or httpx.Client(base_url=url, timeout=60, headers=AUTH)
        local.client = client
        profile, parts, want, text = plan(i, pool)
        t0 = time.perf_counter()
        r = client.post(f"/v1/profiles/{profile}/predict", files=[("images", (n, b, "image/png")) for n, b in parts])
        elapsed = time.perf_counter() - t0
        if r.status_code != want:
            failures.append(f"request {i}: {r.status_code} instead of {want}: {r.text[:200]}")
        elif want == 200:
            got = r.json()["results"][0]["score"]
            if abs(got - expected[(profile, i % len(pool))]) > 1e-5:
                failures.append(f"request {i}: score {got} != library {expected[(profile, i % len(pool))]}")
        elif text not in r.json()["detail"]:
            failures.append(f"request {i}: the detail does not say {text!r}: {r.text[:200]}")
        return elapsed, r.status_code

    try:
        with ThreadPoolExecutor(CLIENTS) as pool_:
            list(pool_.map(send, range(60)))  # warm-up round: allocators, connections
            rss_before = rss_bytes(proc.pid)
            # the library's own batch throughput on the same images, measured just before the load
            # (the server is idle now), for comparison with the service's
            inspector = Inspector(made["bottle"], make_model())
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the server
            try:
                inspector.inspect(decoded[:8], batch_size=8)
                t0 = time.perf_counter()
                inspector.inspect(decoded * 8, batch_size=8)
                library_rate = 8 * len(decoded) / (time.perf_counter() - t0)
            finally:
                torch.set_num_threads(threads)
            t0 = time.perf_counter()
            timings = list(pool_.map(send, range(REQUESTS)))
            wall = time.perf_counter() - t0
            rss_after = rss_bytes(proc.pid)
        batching = httpx.get(f"{url}/health/ready").json()["batching"]  # open without the key
        assert not failures, "\n".join(failures[:10])
        assert len(timings) == REQUESTS
        assert httpx.get(f"{url}/health/live").status_code == 200
        n_valid = sum(1 for i in list(range(60)) + list(range(REQUESTS)) if plan(i, pool)[2] == 200)
        assert httpx.get(f"{url}/v1/inspections?limit=1").status_code == 401  # the key is required
        assert httpx.get(f"{url}/v1/inspections?limit=1", headers=AUTH).json()["total"] == n_valid
        latencies = np.array([t for t, _ in timings]) * 1000
        statuses = {s: sum(1 for _, x in timings if x == s) for s in sorted({x for _, x in timings})}
        print(
            f"\nload: {REQUESTS} requests from {CLIENTS} clients in {wall:.2f} s = {REQUESTS / wall:.1f} requests/s; "
            f"latency ms p50 {np.percentile(latencies, 50):.1f} p90 {np.percentile(latencies, 90):.1f} "
            f"p99 {np.percentile(latencies, 99):.1f}; statuses {statuses}; "
            f"server RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
            f"valid images/s {sum(1 for _, x in timings if x == 200) / wall:.1f} "
            f"vs the library's batch-8 {library_rate:.1f} in-process "
            "(both 1 torch thread); "
            f"{batching['images']} images in {batching['batches']} batches (largest {batching['largest']})"
        )
        assert rss_after - rss_before < 48 * 2**20, f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB"

    finally:
        stop_server(proc)

    # graceful shutdown: restart on the same folder with a long batch window so that requests are
    # still queued when SIGTERM arrives; they must be answered and recorded before the process ends
    key = ("--api-key-file", str(tmp_path / "key"))
    proc, url = start_server(folder, *key, "--batch-window-ms", "1500", log=tmp_path / "server2.log")

    def late(i: int) -> int:
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as c:
            parts = [("images", (f"late{i}_{k}.png", pool[k], "image/png")) for k in range(2)]
            return c.post("/v1/profiles/bottle/predict", files=parts).status_code

    try:
        with ThreadPoolExecutor(CLIENTS) as pool_:
            futures = [pool_.submit(late, i) for i in range(CLIENTS)]
            # the budget every late request holds, admitted and waiting: its two images, sized from their headers
            held = CLIENTS * sum(probe_upload(pool[k], "p", min_size=1, max_pixels=10**6, include=frozenset())[0]
                                 for k in range(2))  # fmt: skip
            deadline = time.monotonic() + 60
            while in_flight(url) < held:  # all arrived, all waiting in the 1.5 s batch window
                assert time.monotonic() < deadline and not any(f.done() for f in futures), "not all in flight"
                time.sleep(0.02)
            sigterm = time.perf_counter()
            stop_server(proc)
            answered = [f.result() for f in futures]
            waited = time.perf_counter() - sigterm
    finally:
        if proc.poll() is None:
            stop_server(proc)
    assert answered == [200] * CLIENTS
    with sqlite3.connect(folder / "inspections.sqlite") as db:
        late_rows = db.execute("select count(*) from inspections where filename like 'late%'").fetchone()[0]
        total = db.execute("select count(*) from inspections").fetchone()[0]
    assert (late_rows, total) == (2 * CLIENTS, n_valid + 2 * CLIENTS)
    print(
        f"shutdown: {CLIENTS} requests in flight at SIGTERM answered and recorded; "
        f"the server exited {waited:.2f} s later"
    )
