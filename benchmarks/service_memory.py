"""Peak resident memory of `winclip serve` under a pixel bomb: a tiny all-black PNG that decodes to a huge image.

    python benchmarks/service_memory.py [--side 7000] [--concurrent 3] [--include overlay,map] [--src DIR]

Makes a zero-shot profile with the tiny random-weight ViT of the tests, starts `winclip serve` (loopback,
one torch thread) on it, warms it with one small photo, then sends `--concurrent` simultaneous predict
requests, each one black `side`×`side` PNG (about 48 KB for 7000), asking for `--include`. Printed: the
PNG's size, the server's resident memory after the warm-up, its peak (the kernel's high-water mark,
VmHWM, read from /proc), and each answer's status. `--src DIR` runs the `winclip` package found in
DIR/src instead (e.g. an older checkout, to measure it the same way; add `--no-key` when it has no
--api-key-file). Loopback only; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "tiny-vit.json")
MODEL = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]
KEY = "benchmark-key-0123456789abcdef"


def black_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def status(pid: int, field: str) -> int:
    """A memory field of /proc/<pid>/status in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict, profiles: Path, key: Path | None, more: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    extra = (["--api-key-file", str(key)] if key else []) + more
    cmd = [sys.executable, "-m", "winclip", "serve", "--profiles", str(profiles), "--port", str(port), *MODEL]
    proc = subprocess.Popen([*cmd, "--threads", "1", *extra], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"winclip serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"not ready in 120 s:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--concurrent", type=int, default=3)
    parser.add_argument("--include", default="overlay,map")
    parser.add_argument("--src", type=Path, default=ROOT, help="checkout whose src/winclip is run")
    parser.add_argument("--no-key", action="store_true", help="the checkout has no --api-key-file")
    parser.add_argument("--server-args", default="", help="more `winclip serve` options, space-separated")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src / "src"), "HF_HUB_OFFLINE": "1"}
    bomb = black_png(args.side)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        profile = [sys.executable, "-m", "winclip", "profile", "create", "--object", "plate", *MODEL]
        subprocess.run([*profile, "--out", str(tmp / "profiles" / "plate")], env=env, check=True, capture_output=True)
        key = None if args.no_key else tmp / "key"
        if key:
            key.write_text(KEY)
        proc, url = start(env, tmp / "profiles", key, shlex.split(args.server_args), tmp / "server.log")
        headers = {} if args.no_key else {"Authorization": f"Bearer {KEY}"}
        predict = f"{url}/v1/profiles/plate/predict?include={args.include}"
        try:
            small = black_png(64)
            httpx.post(predict, headers=headers, files=[("images", ("w.png", small, "image/png"))], timeout=60)
            baseline = status(proc.pid, "VmRSS")

            def send(i: int) -> str:
                files = [("images", (f"bomb{i}.png", bomb, "image/png"))]
                t0 = time.perf_counter()
                r = httpx.post(predict, headers=headers, files=files, timeout=600)
                return f"{r.status_code} in {time.perf_counter() - t0:.1f} s ({r.text[:70]!r})"

            with ThreadPoolExecutor(args.concurrent) as pool:
                answers = list(pool.map(send, range(args.concurrent)))
            peak = status(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(60)
    sent = f"{args.concurrent} concurrent, include={args.include}"
    print(f"bomb: {args.side}x{args.side} black PNG, {len(bomb):,} bytes; {sent}")
    print(f"server RSS after warm-up {baseline / 2**30:.2f} GiB, peak (VmHWM) {peak / 2**30:.2f} GiB")
    for i, answer in enumerate(answers):
        print(f"  request {i}: {answer}")


if __name__ == "__main__":
    main()
