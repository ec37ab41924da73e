"""Issue 22, what a hostile tester broke in `winclip serve`: each numbered item of the issue, reproduced.

1 refused requests never read their body (and uploads in flight have a byte budget); 2 the memory budget
counts bytes; 3 profile names that collide with the station's own files; 4, 5 one bad profile is refused
alone and never fails another profile's images; 6 extreme dates; 10 the key's alphabet, the Origin's
scheme, If-Match, kept folders' modes, FIFOs and link loops in the profiles folder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import io
import json
import os
import shutil
import signal
import socket
import stat
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from PIL import Image

from helpers import TINY
from helpers.service import app_for, images, make_profiles, start_server, stop_server, wait_ready
from winclip.cli import build_parser, main
from winclip.cli.requests import ServeRequest
from winclip.options import ModelSpec
from winclip.service import security
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig
from winclip.service.station import PredictItem, Scored, check_name
from winclip.service.uploads import RequestLimit

KEY = "k3y-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MiB = 1 << 20
SPEC = ModelSpec(TINY, None, device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "profiles"
    make_profiles(folder)
    return folder


def copy_profiles(folder: Path, tmp_path: Path, names: tuple[str, ...] = ("bottle", "zero")) -> Path:
    out = tmp_path / "profiles"
    for name in names:
        shutil.copytree(folder / name, out / name)
    return out


def edit_options(profile: Path, **options: object) -> None:
    """Write option values into a profile.json as JSON text (NaN and Infinity as Python's json writes them)."""
    meta = json.loads((profile / "profile.json").read_text())
    meta["options"].update(options)
    (profile / "profile.json").write_text(json.dumps(meta))


# -- 1. authentication before the body --------------------------------------------------------------------


def asgi_call(app, method: str, path: str, headers: dict[str, str], body_chunks: int = 4) -> tuple[int, list, int]:
    """Call the ASGI app directly: (status, response headers, how many times it read the body)."""
    reads = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * MiB, "more_body": reads < body_chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "scheme": "http",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555), "http_version": "1.1", "root_path": "",
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], start["headers"], reads


def test_a_refused_request_never_reads_its_body(folder, tmp_path):
    config = ServiceConfig(profiles=folder, model=SPEC, db_url=f"sqlite:///{tmp_path}/a.sqlite", api_key=KEY)
    app = create_app(config)
    multipart = {
        "Host": "127.0.0.1:8000",
        "Content-Type": "multipart/form-data; boundary=x",
        "Content-Length": "4194304",
    }
    refused = [
        ("POST", "/v1/profiles/p1/predict", {}, 401),
        ("POST", "/v1/profiles", {"Authorization": "Bearer wrong-key-0123456789"}, 401),
        ("POST", "/v1/profiles", {"Authorization": f"Basic {KEY}"}, 401),
        ("POST", "/v1/profiles", {**AUTH, "Origin": "http://evil.example"}, 403),
        ("PATCH", "/v1/profiles/bottle", {"Sec-Fetch-Site": "cross-site"}, 403),
    ]
    assert len(refused) == 5
    for method, path, extra, expected in refused:
        status, headers, reads = asgi_call(app, method, path, {**multipart, **extra})
        assert (status, reads) == (expected, 0), (method, path, extra)
        assert (b"connection", b"close") in headers  # the unread body is dropped with the connection
        if expected == 401:
            assert (b"www-authenticate", b"Bearer") in headers


def process_files(pid: int, under: Path) -> dict[str, int]:
    """Regular files the process holds open under `under` (spooled uploads are unlinked: seen through /proc)."""
    found = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            info = os.stat(fd)
        except OSError:
            continue
        if target.startswith(str(under)) and stat.S_ISREG(info.st_mode):
            found[target] = info.st_size
    return found


@contextmanager
def spool_watch(pid: int, under: Path):
    """The largest file the process held open under `under` while the block ran (polled every 2 ms)."""
    largest = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            largest[0] = max([largest[0], *process_files(pid, under).values()])
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield largest
    finally:
        done.set()
        thread.join()


def multipart_head(port: int, length: int, auth: dict[str, str]) -> bytes:
    lines = [
        "POST /v1/profiles/p1/predict HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {length}",
        "Content-Type: multipart/form-data; boundary=BOUNDARY", *(f"{k}: {v}" for k, v in auth.items()),
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def part(size: int) -> bytes:
    head = b'--BOUNDARY\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
    return head + b"Content-Type: image/png\r\n\r\n" + b"\0" * size + b"\r\n--BOUNDARY--\r\n"


@pytest.mark.slow
def test_a_100_mib_unauthenticated_upload_is_answered_401_at_once_and_never_spooled(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "key").write_text(KEY)
    os.environ["TMPDIR"], old = str(spool), os.environ.get("TMPDIR")
    try:
        proc, url = start_server(tmp_path / "profiles", "--api-key-file", str(tmp_path / "key"), log=tmp_path / "log")
    finally:
        os.environ.pop("TMPDIR") if old is None else os.environ.__setitem__("TMPDIR", old)
    port = int(url.rsplit(":", 1)[1])
    try:
        # the watch sees a spooled upload: an authorised 3 MiB one, held open while its body is incomplete
        body = part(3 * MiB)
        with spool_watch(proc.pid, spool) as largest, socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(multipart_head(port, len(body) + 10, AUTH) + body)
            deadline = time.monotonic() + 10
            while largest[0] < 2 * MiB and time.monotonic() < deadline:
                time.sleep(0.01)
        assert largest[0] > 2 * MiB, "the watch does not see spooled uploads"

        body = part(100 * MiB)
        with spool_watch(proc.pid, spool) as largest, socket.create_connection(("127.0.0.1", port)) as s:
            t0 = time.monotonic()
            s.sendall(multipart_head(port, len(body), {}) + body[: MiB // 4])
            s.settimeout(5)
            answer = s.recv(4096)
            answered = time.monotonic() - t0
            sent = MiB // 4
            try:
                while sent < len(body):
                    sent += s.send(body[sent : sent + MiB])
            except OSError:
                pass  # the server closed the connection: the rest of the body is never read
        assert answer.startswith(b"HTTP/1.1 401 ") and answered < 1.0, (answer[:200], answered)
        assert largest[0] <= MiB, f"{largest[0]:,} bytes spooled for a refused request"
        assert [p.name for p in spool.iterdir()] == []
    finally:
        status = stop_server(proc)
    assert status in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it caught after its graceful shutdown
    assert "Application shutdown complete" in (tmp_path / "log").read_text()


def test_uploads_in_flight_have_a_byte_budget(folder):
    statuses: list[int] = []
    gate = asyncio.Event()

    async def inner(scope, receive, send) -> None:  # reads the whole body, like a multipart parser
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limit = RequestLimit(inner, limit=2 * MiB, in_flight=3 * MiB)

    async def request(length: int, wait: bool) -> None:
        async def receive() -> dict:
            if wait:
                await gate.wait()
            return {"type": "http.request", "body": b"x" * length, "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
                if message["status"] == 503:
                    assert (b"retry-after", b"2") in message["headers"]

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/x",
            "headers": [(b"content-length", str(length).encode())],
        }
        await limit(scope, receive, send)

    async def scenario() -> None:
        first = asyncio.create_task(request(2 * MiB, wait=True))  # holds 2 MiB while its body is read
        await asyncio.sleep(0.05)
        await request(2 * MiB, wait=False)  # does not fit beside it: 503 at once, its body unread
        await request(MiB, wait=False)  # fits beside it
        gate.set()
        await first
        await request(2 * MiB, wait=False)  # released: fits again
        assert limit.in_flight == 0

    asyncio.run(scenario())
    assert statuses == [503, 200, 200, 200]
    config = ServiceConfig(profiles=folder, model=SPEC, max_images=1, max_file_bytes=MiB)
    assert config.body_bytes_in_flight >= config.request_limit
    with pytest.raises(ValueError, match="max_body_bytes_in_flight"):
        ServiceConfig(profiles=folder, model=SPEC, max_images=1, max_file_bytes=MiB, max_body_bytes_in_flight=MiB)


# -- 2. the memory budget in bytes ----------------------------------------------------------------


def png(mode: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_memory_budget_counts_bit_depth_and_the_pictures_asked_for():
    from winclip.service.budget import SCORING, bytes_per_pixel, estimate_bytes

    def header(mode: str) -> Image.Image:
        return Image.open(io.BytesIO(png(mode, (700, 500))))

    pixels = 700 * 500
    none, both = frozenset(), frozenset({"overlay", "map"})
    for mode, decoded in (("L", 1), ("I;16", 2), ("RGB", 4)):
        image = header(mode)
        assert estimate_bytes(image, none) >= pixels * (decoded + 4 + 4)  # decoded pixels and their RGB copy, the map
        assert (
            estimate_bytes(image, both) >= estimate_bytes(image, frozenset({"overlay"})) > estimate_bytes(image, none)
        )
    assert bytes_per_pixel(64, none) > bytes_per_pixel(4, none) == SCORING  # a deep enough image: its decoding leads
    assert estimate_bytes(header("I;16"), both) >= estimate_bytes(header("L"), both)


def rss_peak_since_reset() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_the_estimate_bounds_what_a_request_really_holds(tmp_path, model):
    """Decode, score, draw overlay and map and build the JSON answer of noisy photos (the worst case for PNG and
    base64) in this process: the peak resident memory (VmHWM, reset first) stays under the budget's estimate."""
    from winclip.inspection.inspector import Inspector
    from winclip.inspection.profile import Profile
    from winclip.service.budget import estimate_bytes
    from winclip.service.routes.predict import pictures
    from winclip.service.uploads import decode_upload

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset and read the peak resident memory")
    inspector = Inspector(Profile.create(model, "plate"), model)
    rng = np.random.default_rng(0)
    h, w = 1200, 1600
    noise = {"L": rng.integers(0, 256, (h, w), dtype=np.uint8), "I;16": rng.integers(0, 65536, (h, w), dtype=np.uint16),
             "F": rng.random((h, w), dtype=np.float32)}  # fmt: skip
    both = frozenset({"overlay", "map"})
    assert len(noise) == 3
    for mode, pixels in noise.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="TIFF" if mode == "F" else "PNG")
        data = buffer.getvalue()
        need = estimate_bytes(Image.open(io.BytesIO(data)), both) + len(data)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from what is resident now
        start = rss_peak_since_reset()
        image = decode_upload(data, "p", min_size=8, max_pixels=10**8)
        (result,) = inspector.inspect([image])
        upload = type("Upload", (), {"image": image})()
        answer = json.dumps({"results": [pictures(upload, result, both)]}).encode()
        del image, result, upload
        used = rss_peak_since_reset() - start
        assert len(answer) > h * w  # the pictures really are in the answer (noise does not compress)
        assert used <= need, f"{mode}: {used:,} bytes used, {need:,} estimated"


def test_the_budget_counts_bytes_and_the_pictures_asked_for(folder, tmp_path):
    from winclip.service.budget import estimate_bytes

    blob = png("I;16", (300, 200))
    plain = estimate_bytes(Image.open(io.BytesIO(blob))) + len(blob)
    drawn = estimate_bytes(Image.open(io.BytesIO(blob)), frozenset({"overlay", "map"})) + len(blob)
    assert drawn > plain
    with app_for(folder, tmp_path / "m.sqlite", max_pixels=300 * 200, max_bytes_in_flight=drawn - 1) as c:
        wait_ready(c)
        one = [("images", ("b.png", blob, "image/png"))]
        assert c.post("/v1/profiles/bottle/predict", files=one).status_code == 200
        r = c.post("/v1/profiles/bottle/predict?include=overlay,map", files=one)
        assert r.status_code == 413 and f"b.png: needs about {drawn:,} bytes" in r.json()["detail"], r.text
        budget = c.app.state.winclip.budget
        with budget.reserve(budget.limit - plain + 1, "held"):  # another request in flight
            r = c.post("/v1/profiles/bottle/predict", files=one)
            assert r.status_code == 503 and r.headers["retry-after"] == "2" and "memory budget" in r.text
        assert budget.in_flight == 0
        assert c.post("/v1/profiles/bottle/predict", files=one).status_code == 200


# -- 3. profile names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["inspections.sqlite", "inspections.sqlite-journal", "INSPECTIONS.SQLITE-WAL", "inspections.sqlite-shm",
     "Inspections.Sqlite-mj1F2E", "kept", "KEPT", "Kept"],
)  # fmt: skip
def test_names_of_the_stations_own_files_are_refused(name):
    with pytest.raises(ValueError, match="reserved"):
        check_name(name)


def test_a_profile_named_like_the_database_journal_or_the_keep_folder_is_never_created(folder, tmp_path):
    with app_for(copy_profiles(folder, tmp_path), tmp_path / "profiles" / "inspections.sqlite") as c:
        wait_ready(c)
        for name in ("inspections.sqlite-journal", "inspections.sqlite-wal", "kept", "KEPT"):
            r = c.post("/v1/profiles", data={"name": name, "object": "bottle"})
            assert r.status_code == 422 and "reserved" in r.json()["detail"], (name, r.text)
            assert not (tmp_path / "profiles" / name).is_dir()  # (the -wal file is the record's own journal)
    with app_for(tmp_path / "profiles", tmp_path / "profiles" / "inspections.sqlite") as c:  # starts again
        assert sorted(wait_ready(c)["profiles"]) == ["bottle", "zero"]


def test_a_profile_folder_with_a_reserved_name_is_refused_at_start_and_by_the_cli(folder, tmp_path, capsys):
    profiles = copy_profiles(folder, tmp_path)
    shutil.copytree(folder / "zero", profiles / "kept")
    with app_for(profiles, tmp_path / "x.sqlite") as c:
        ready = wait_ready(c)
        assert ready["profiles"] == ["bottle", "zero"] and "reserved" in ready["refused"]["kept"]
    out = profiles / "Inspections.sqlite-wal"
    assert (
        main(["profile", "create", "--object", "x", "--out", str(out), "--backbone", "x", "--pretrained", "none"]) == 2
    )
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("winclip: error")]
    assert "reserved" in line and not out.exists()


# -- 4, 5. one profile's options --------------------------------------------------------------------


BAD_OPTIONS = {
    "sigma20": {"smooth_sigma": 20.0},
    "sigma1e6": {"smooth_sigma": 1e6},
    "sigmanan": {"smooth_sigma": float("nan")},
    "tempnan": {"temperature": float("nan")},
    "tempinf": {"temperature": float("inf")},
    "overlapnan": {"tile_overlap": float("nan")},
}


def test_profiles_with_bad_options_are_refused_one_by_one_and_the_rest_served(folder, tmp_path, capsys):
    profiles = copy_profiles(folder, tmp_path)
    for name, options in BAD_OPTIONS.items():
        shutil.copytree(folder / "zero", profiles / name)
        edit_options(profiles / name, **options)
    assert "NaN" in (profiles / "tempnan" / "profile.json").read_text()
    with app_for(profiles, tmp_path / "o.sqlite") as c:
        ready = wait_ready(c)
        assert ready["profiles"] == ["bottle", "zero"] and sorted(ready["refused"]) == sorted(BAD_OPTIONS)
        listed = c.get("/v1/profiles").json()
        assert [p["name"] for p in listed["profiles"]] == ["bottle", "zero"]
        for name, options in BAD_OPTIONS.items():
            (option,) = options
            why = listed["refused"][name]
            assert option in why and "\n" not in why, why
            assert (
                c.post(f"/v1/profiles/{name}/predict", files=[("images", ("a.png", images(1, 1)[0], "i"))]).status_code
                == 409
            )
        r = c.post("/v1/profiles/zero/predict", files=[("images", ("a.png", images(1, 1)[0], "image/png"))])
        assert r.status_code == 200
    capsys.readouterr()
    for name in BAD_OPTIONS:
        assert main(["profile", "show", str(profiles / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{profiles / name}: malformed profile" in err, err


def test_a_batch_never_fails_because_of_another_profiles_image(folder, tmp_path):
    with app_for(copy_profiles(folder, tmp_path), tmp_path / "i.sqlite", window_ms=300) as c:
        wait_ready(c)
        state = c.app.state.winclip
        station = state.station
        good, bad = images(2, 1)[0], images(3, 1)[0]
        photo = Image.open(io.BytesIO(good)).convert("RGB")

        def nan_scores(images_, **kwargs):
            return [type(r)(**{**r.__dict__, "score": float("nan")}) for r in real(images_, **kwargs)]

        def broken(images_, **kwargs):
            raise RuntimeError("the model fell over")

        zero = station.profiles["zero"].inspector
        real = zero.inspect
        for fault in (nan_scores, broken):
            zero.inspect = fault
            items = [PredictItem("bottle", photo, "good.png", "0" * 64, time.perf_counter()),
                     PredictItem("zero", photo, "bad.png", "1" * 64, time.perf_counter())]  # fmt: skip
            results = state.call(lambda items=items: station.predict_batch(items)).result(timeout=60)
            assert isinstance(results[0], Scored), (fault.__name__, results[0])
            assert isinstance(results[1], Exception) and "zero" in str(results[1]), (fault.__name__, results[1])
        zero.inspect = real
        # through HTTP, in one batch window: the good profile's image is answered 200
        rows_before = c.get("/v1/inspections").json()["total"]
        zero.inspect = nan_scores
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(c.post, f"/v1/profiles/{name}/predict", files=[("images", ("p.png", blob, "i"))])
                       for name, blob in (("bottle", good), ("zero", bad))]  # fmt: skip
            ok, failed = (f.result() for f in futures)
        zero.inspect = real
        assert ok.status_code == 200 and failed.status_code in (422, 500, 503), (ok.text, failed.text)
        assert "zero" in failed.json()["detail"] or "bad.png" in failed.json()["detail"]
        assert c.get("/v1/inspections").json()["total"] == rows_before + 1


def test_smoothing_fits_every_image_size_the_model_takes(folder, tmp_path):
    profiles = copy_profiles(folder, tmp_path, ("zero",))
    edit_options(profiles / "zero", smooth_sigma=3.5)  # radius 14: more than an 8-pixel photo
    with app_for(profiles, tmp_path / "s.sqlite") as c:
        assert wait_ready(c)["profiles"] == ["zero"]
        tiny = io.BytesIO()
        Image.fromarray(np.full((8, 12, 3), 90, np.uint8)).save(tiny, format="PNG")
        r = c.post("/v1/profiles/zero/predict?include=map", files=[("images", ("t.png", tiny.getvalue(), "i"))])
        assert r.status_code == 200, r.text


# -- 6. extreme dates --------------------------------------------------------------------------------


def test_dates_outside_what_the_record_can_store_are_422(folder, tmp_path):
    with app_for(copy_profiles(folder, tmp_path, ("zero",)), tmp_path / "d.sqlite") as c:
        wait_ready(c)
        for query in ("since=0001-01-01T00:00:00%2B14:00", "until=9999-12-31T23:00:00-14:00",
                      "since=0001-01-01T00:00:00.5%2B00:01"):  # fmt: skip
            for path in ("/v1/inspections", "/v1/inspections.csv"):
                r = c.get(f"{path}?{query}")
                assert r.status_code == 422, (path, query, r.status_code, r.text)
                assert r.json()["detail"].split(":")[0] in ("since", "until")
        for query in ("since=0001-01-01T00:00:00Z", "until=9999-12-31T00:00:00Z", "since=2026-01-01T10:00:00%2B14:00"):
            assert c.get(f"/v1/inspections?{query}").status_code == 200, query
            r = c.get(f"/v1/inspections.csv?{query}")
            assert r.status_code == 200 and r.text.startswith("id,"), query


# -- 10. the smaller ones ------------------------------------------------------------------------


def test_keys_are_printable_ascii_only(tmp_path, monkeypatch):
    monkeypatch.delenv("WINCLIP_API_KEY", raising=False)
    for key in ("é" * 17, "ключ-ключ-ключ-ключ", "k3y-for-tests-0123456789\u200b", "tab\tin-the-key-0123456789"):
        with pytest.raises(ValueError, match="printable ASCII"):
            security.check_key(key, "test")
        (tmp_path / "key").write_text(key, encoding="utf-8")
        args = build_parser().parse_args(
            ["serve", "--profiles", str(tmp_path / "p"), "--api-key-file", str(tmp_path / "key")]
        )
        with pytest.raises(ValueError, match="printable ASCII"):  # refused at start: `serve` exits 2 with this line
            ServeRequest.of(args)
    assert security.check_key(KEY, "test") == KEY


def test_the_origin_scheme_must_be_the_servers():
    host = {"host": "127.0.0.1:8000"}
    assert security.refusal({**host, "origin": "http://127.0.0.1:8000"}, "POST", "http", False) is None
    for origin in ("https://127.0.0.1:8000", "ws://127.0.0.1:8000", "https://127.0.0.1"):
        why = security.refusal({**host, "origin": origin}, "POST", "http", False)
        assert why is not None and "Origin" in why, origin
    assert security.refusal({"host": "st.plant", "origin": "https://st.plant"}, "POST", "https", False) is None


def test_if_match_is_parsed_safely(folder, tmp_path):
    with app_for(copy_profiles(folder, tmp_path, ("zero",)), tmp_path / "e.sqlite") as c:
        wait_ready(c)
        for value in (f'"{"9" * 5000}"', "9" * 5000, '"²"', '"١"', '"1" "2"', '"-1"', "W/"):
            r = c.patch("/v1/profiles/zero", json={"threshold": 0.4}, headers={"If-Match": value.encode()})
            assert r.status_code in (412, 422), (value[:20], r.status_code, r.text)
        etag = c.get("/v1/profiles/zero").headers["etag"]
        assert c.patch("/v1/profiles/zero", json={"threshold": 0.4}, headers={"If-Match": etag}).status_code == 200


def test_every_kept_folder_is_0750(folder, tmp_path):
    from winclip.service.retention import Keeper

    old = os.umask(0o022)
    try:
        keeper = Keeper(tmp_path / "kept", frozenset({"anomalous"}), 10_000)
        path, _ = keeper.keep(
            record_id=1, time=datetime(2026, 1, 2, tzinfo=timezone.utc), profile="bracket", label="anomalous",
            filename="a.png", photo=(b"p", ".png"), overlay=b"o",
        )  # fmt: skip
        keeper.close()
    finally:
        os.umask(old)
    day = Path(path).parent
    for made in (day, day.parent, tmp_path / "kept"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o750, (made, oct(made.stat().st_mode))


@contextmanager
def fifo_unblocked_after(fifo: Path, seconds: float):
    """A FIFO that a thread opens for writing every `seconds` (so a reader stuck on it is released)."""
    os.mkfifo(fifo)

    done = threading.Event()

    def release() -> None:
        while not done.wait(seconds):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # nobody is reading it: nothing to release

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_fifo_or_a_link_loop_in_a_profile_folder_is_refused_and_listed(folder, tmp_path, capsys):
    profiles = copy_profiles(folder, tmp_path)
    shutil.copytree(folder / "zero", profiles / "piped")
    (profiles / "piped" / "roi.png").unlink()
    (profiles / "looped").mkdir()
    os.symlink("profile.json", profiles / "looped" / "profile.json")
    (profiles / "devnull").mkdir()
    os.symlink("/dev/null", profiles / "devnull" / "profile.json")
    with fifo_unblocked_after(profiles / "piped" / "roi.png", 20):
        t0 = time.monotonic()
        with app_for(profiles, tmp_path / "f.sqlite") as c:
            ready = wait_ready(c, timeout=60)
            assert time.monotonic() - t0 < 15, "start-up waited on the FIFO"
        assert ready["profiles"] == ["bottle", "zero"]
        assert sorted(ready["refused"]) == ["devnull", "looped", "piped"]
        assert "roi.png" in ready["refused"]["piped"] and "regular file" in ready["refused"]["piped"]
        assert "symbolic link" in ready["refused"]["looped"]
        capsys.readouterr()
        t0 = time.monotonic()
        assert main(["profile", "show", str(profiles / "piped")]) == 2
        assert time.monotonic() - t0 < 5
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "roi.png" in err and "regular file" in err
