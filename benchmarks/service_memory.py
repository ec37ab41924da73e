"""Peak resident memory of `winclip serve` under pixel bombs: tiny files that decode to huge images.

    python benchmarks/service_memory.py [--side 7000] [--concurrent 2] [--kinds 8bit,16bit,float]
                                        [--include overlay,map] [--src DIR] [--server-args "..."]

Makes a zero-shot profile with the tiny random-weight ViT of the tests, then for each kind of bomb
starts a fresh `winclip serve` (loopback, one torch thread), warms it with one small photo, and sends
`--concurrent` simultaneous predict requests, each one all-black `side`x`side` image asking for
`--include`. Kinds: `8bit` a grey PNG (about 48 KB at 7000), `16bit` a 16-bit grey PNG (about
95 KB), `float` a 32-bit float TIFF (deflate), `rgb` an RGB PNG. One table row per kind: the file's
size, the memory the budget reserves for one such request (winclip.service.budget.estimate_bytes,
of the checkout measured when it has it), the server's resident memory after the warm-up, its peak
(the kernel's high-water mark VmHWM, read from /proc) and each answer's status. `--src DIR` runs
the `winclip` package found in DIR/src instead (e.g. an older checkout, to measure it the same way;
add `--no-key` when it has no --api-key-file). Loopback only; each server is stopped after its row.
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
KINDS = {"8bit": ("L", "PNG"), "16bit": ("I;16", "PNG"), "float": ("F", "TIFF"), "rgb": ("RGB", "PNG")}


def bomb(kind: str, side: int) -> bytes:
    """An all-black image of `kind`: tiny compressed, huge decoded."""
    mode, fmt = KINDS[kind]
    buffer = io.BytesIO()
    options = {"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {"optimize": True}
    Image.new(mode, (side, side)).save(buffer, format=fmt, **options)
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


def estimate(env: dict, data: bytes, include: str) -> str:
    """What the measured checkout's budget reserves for one such upload (or "-" when it has no byte budget)."""
    wanted = set(filter(None, include.split(",")))
    code = (
        "import io, sys; from PIL import Image; from winclip.service.budget import estimate_bytes; "
        f"print(estimate_bytes(Image.open(io.BytesIO(sys.stdin.buffer.read())), {wanted!r}) + {len(data)})"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, input=data, capture_output=True)
    return f"{int(done.stdout) / 2**30:.2f} GiB" if done.returncode == 0 else "-"


def measure(env: dict, tmp: Path, kind: str, args: argparse.Namespace) -> str:
    """One table row: a fresh server, a warm-up, `--concurrent` bombs of `kind` at once."""
    data = bomb(kind, args.side)
    key = None if args.no_key else tmp / "key"
    proc, url = start(env, tmp / "profiles", key, shlex.split(args.server_args), tmp / f"server-{kind}.log")
    headers = {} if args.no_key else {"Authorization": f"Bearer {KEY}"}
    predict = f"{url}/v1/profiles/plate/predict?include={args.include}"
    try:
        small = bomb("8bit", 64)
        httpx.post(predict, headers=headers, files=[("images", ("w.png", small, "image/png"))], timeout=60)
        baseline = status(proc.pid, "VmRSS")

        def send(i: int) -> str:
            files = [("images", (f"bomb{i}", data, "application/octet-stream"))]
            t0 = time.perf_counter()
            r = httpx.post(predict, headers=headers, files=files, timeout=900)
            return f"{r.status_code} in {time.perf_counter() - t0:.1f} s"

        with ThreadPoolExecutor(args.concurrent) as pool:
            answers = list(pool.map(send, range(args.concurrent)))
        peak = status(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(60)
    cells = [kind, f"{len(data):,}", estimate(env, data, args.include), f"{baseline / 2**30:.2f} GiB"]
    return "| " + " | ".join([*cells, f"{peak / 2**30:.2f} GiB", ", ".join(answers)]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--kinds", default="8bit,16bit,float", help=f"comma-separated, among {', '.join(KINDS)}")
    parser.add_argument("--include", default="overlay,map")
    parser.add_argument("--src", type=Path, default=ROOT, help="checkout whose src/winclip is run")
    parser.add_argument("--no-key", action="store_true", help="the checkout has no --api-key-file")
    parser.add_argument("--server-args", default="", help="more `winclip serve` options, space-separated")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src / "src"), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        profile = [sys.executable, "-m", "winclip", "profile", "create", "--object", "plate", *MODEL]
        subprocess.run([*profile, "--out", str(tmp / "profiles" / "plate")], env=env, check=True, capture_output=True)
        (tmp / "key").write_text(KEY)
        print(f"{args.side}x{args.side} all-black images, {args.concurrent} concurrent, include={args.include}")
        print("| kind | file bytes | budget per request | RSS after warm-up | peak RSS (VmHWM) | answers |")
        print("|---|---|---|---|---|---|")
        for kind in args.kinds.split(","):
            print(measure(env, tmp, kind, args), flush=True)


if __name__ == "__main__":
    main()
