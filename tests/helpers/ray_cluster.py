"""A real Ray cluster for tests: one head node on loopback, stopped by the test that started it.

`ray start --head --block` runs in its own session; ending that process (SIGTERM) stops the
node's processes, and a straggler of that session is killed by its process group. Only loopback:
with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray keeps the node address 127.0.0.1 (Ray replaces
127.0.0.1 by the machine's address otherwise) and its servers listen on 127.0.0.1 alone; a
random token authenticates every connection; no dashboard, no usage statistics.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
START_SECONDS = 90
SRC = Path(__file__).resolve().parents[2] / "src"  # the workers import this winclip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head node with `cpus` CPUs; `env` is what a driver needs to reach it (also through `address`)."""

    def __init__(self, cpus: int = 2) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="wr", dir="/tmp"))  # short: Ray's socket paths have a limit
        self.address = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        }
        port = self.address.rsplit(":", 1)[1]
        self.head = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", port, "--num-cpus",
             str(cpus), "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(self.temp)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        code = f"import ray; ray.init(address={self.address!r}, log_to_driver=False); ray.shutdown()"
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.head.returncode}")
            try:
                probe = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                continue
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Ray head at {self.address} did not come up in {START_SECONDS} s")

    def worker_pids(self, actor: str) -> list[int]:
        """PIDs of this cluster's worker processes now running actor class `actor` (from its log file names)."""
        logs = self.temp / "session_latest" / "logs"
        pids = []
        for log in logs.glob("worker-*.out"):
            pid = int(log.stem.rsplit("-", 1)[1])
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"ray::{actor}".encode() in cmdline:
                pids.append(pid)
        return sorted(pids)

    def stop(self) -> None:
        """End the head's session (SIGTERM, then SIGKILL to what is left of its group) and remove its logs."""
        if self.head.poll() is None:
            self.head.terminate()
            try:
                self.head.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.head.wait()
        shutil.rmtree(self.temp, ignore_errors=True)
