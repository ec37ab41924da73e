"""Latency from file close to MQTT message: `winclip watch` (tiny random-weight ViT) on a local Mosquitto.

    python benchmarks/line_latency.py [--photos 50] [--size 256] [--threads 1]

Starts Mosquitto on 127.0.0.1 (needs `mosquitto`), a subscriber, and `winclip watch IN --mqtt ...` as a
subprocess; then writes one photo at a time (under a temporary name, renamed at the end: the rename is the
"file close" the clock starts at) and waits for its message on `<prefix>/bottle/results`. Prints the median and
p95 over the photos (the first, which warms up, is left out) for inotify and for `--poll --settle-seconds 0.2`,
each against the baseline measured in this process: `Inspector.inspect` of the same photo (decode, score,
decide; no files, no record, no MQTT).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers.line import MODEL_ARGS, Broker, Subscriber, bottle_profile, make_profile, photo_bytes  # noqa: E402
from helpers.soak import Watch  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name, its core count and whether it has AVX-512 (from /proc/cpuinfo where there is one)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extras = [x for x, flag in (("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16")) if flag in flags]
    return f"{name}, {os.cpu_count()} cores{', ' + ', '.join(extras) if extras else ''}"


def baseline(photos: list[bytes], threads: int) -> list[float]:
    """Seconds of Inspector.inspect per photo (decoded from a file), in this process."""
    import torch

    from helpers import make_model
    from winclip.inspection.inspector import Inspector

    torch.set_num_threads(threads)
    inspector = Inspector(bottle_profile(), make_model())
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(photos):
            path = Path(tmp) / f"b{i}.png"
            path.write_bytes(data)
            start = time.perf_counter()
            inspector.inspect([str(path)])
            out.append(time.perf_counter() - start)
    return out[1:]


def watch_latency(folder: Path, photos: list[bytes], threads: int, extra: list[str]) -> list[float]:
    """Seconds from each photo's rename into IN to its MQTT message."""
    inbox, out = folder / "in", folder / "out"
    inbox.mkdir(parents=True)
    profile = make_profile(folder)
    broker = Broker(folder)
    sub = Subscriber(broker.port, "factory/line1/bottle/results")
    args = [str(inbox), "--profile", str(profile), "--out", str(out), "--mqtt", broker.url, "--threads", str(threads),
            "--after", "delete", *extra, *MODEL_ARGS]  # fmt: skip
    watch = Watch(args, folder / "watch.log")
    latencies = []
    try:
        deadline = time.monotonic() + 120
        while not watch.ready():
            assert time.monotonic() < deadline, "winclip watch did not start"
            time.sleep(0.05)
        for i, data in enumerate(photos):
            tmp = inbox / f".p{i}.png.part"
            tmp.write_bytes(data)
            tmp.rename(inbox / f"p{i}.png")
            closed = time.time()
            deadline = time.monotonic() + 60
            while len(sub.arrived) <= i:
                assert time.monotonic() < deadline, f"no message for photo {i}"
                time.sleep(0.001)
            latencies.append(sub.arrived[i] - closed)
        assert watch.stop() == 0
    finally:
        if watch.proc.poll() is None:
            watch.kill()
        sub.close()
        broker.stop()
    return latencies[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--size", type=int, default=256, help="photo side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the watcher and of the baseline")
    a = parser.parse_args()
    photos = [photo_bytes(i, size=a.size) for i in range(a.photos + 1)]
    base = baseline(photos, a.threads)
    rows = []
    for name, extra in (("inotify", []), ("settle 0.2 s (--poll)", ["--poll", "--settle-seconds", "0.2"])):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append((name, watch_latency(Path(tmp), photos, a.threads, extra)))
    b50 = statistics.median(base)
    print(f"CPU: {cpu_name()}; {a.photos} photos of {a.size}x{a.size} px, tiny ViT, torch threads {a.threads}")
    print(f"{'path':<28} {'median ms':>10} {'p95 ms':>10} {'median / baseline':>18}")
    p95 = lambda xs: statistics.quantiles(xs, n=20)[-1]
    print(f"{'baseline: Inspector.inspect':<28} {b50 * 1e3:>10.1f} {p95(base) * 1e3:>10.1f} {1.0:>18.2f}")
    for name, xs in rows:
        m = statistics.median(xs)
        print(f"{'watch, ' + name:<28} {m * 1e3:>10.1f} {p95(xs) * 1e3:>10.1f} {m / b50:>18.2f}")


if __name__ == "__main__":
    main()
