"""Helpers shared by the service tests (no tests here): images, profiles, the app, a real server."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip[serve]'")

from PIL import Image

from conftest import TINY, make_model, textured
from winclip.inspector import Inspector
from winclip.profile import Profile

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "http://localhost"  # TestClient's base URL: without an API key the service answers loopback names only


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


def start_server(profiles: Path, *extra: str, log: Path) -> tuple[subprocess.Popen, str]:
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
    deadline = time.monotonic() + 60
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
    raise RuntimeError(f"winclip serve did not get ready in 60 s:\n{log.read_text()}")


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
