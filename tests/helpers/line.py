"""What the line tests share: a Mosquitto broker of their own on 127.0.0.1, a subscriber, a webhook receiver,
a tiny profile, and photos written the way cameras write them."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from . import TINY, textured

if TYPE_CHECKING:
    from winclip.inspection.profile import Profile

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
MODEL_ARGS = ("--backbone", TINY, "--pretrained", "none", "--device", "cpu", "--precision", "fp32")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    """Poll until `condition()` is true or `timeout` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


class Broker:
    """A Mosquitto broker on 127.0.0.1 only, on a free port, with persistence off; `stop()` and `start()` again
    on the same port (a broker outage). Skips the test when Mosquitto is not installed."""

    def __init__(self, folder: Path, *, password_file: Path | None = None, tls: dict[str, Path] | None = None) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
        self.port = free_port()
        store = folder / "mosquitto-store"
        store.mkdir(exist_ok=True)  # persistence: a subscriber's session and its queued messages survive a restart
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {store}/",
                 "log_dest stderr"]  # fmt: skip
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the `mosquitto` user, who cannot read the test's folder
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        if tls is not None:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        if not wait_until(self._listening, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}/factory/line1"


class Subscriber:
    """A paho client subscribed to `topic` (QoS 1, persistent session: what arrives while the publisher's broker
    connection is down is not lost to it), keeping every message as (topic, payload dict or text, retain)."""

    def __init__(self, port: int, topic: str = "factory/line1/#", *, username: str | None = None,
                 password: str | None = None) -> None:  # fmt: skip
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, object, bool]] = []
        self.arrived: list[float] = []  # time.time() when each message arrived
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{port}-{time.monotonic_ns()}",
                                  clean_session=False)  # fmt: skip
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert wait_until(self.client.is_connected, 10)

    def _message(self, client, userdata, msg) -> None:
        text = msg.payload.decode()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))
            self.arrived.append(time.time())

    def on(self, leaf: str) -> list:
        """Payloads received on topics ending with `/<leaf>`, in order."""
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith("/" + leaf)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Receiver:
    """A webhook receiver on 127.0.0.1: answers `statuses` in turn (then 200), keeps (headers, body) of each
    POST it accepted with 2xx and counts every attempt."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.accepted: list[tuple[dict, bytes]] = []
        self.attempts: list[float] = []
        pending = list(statuses)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts.append(time.monotonic())
                status = pending.pop(0) if pending else 200
                if 200 <= status < 300:
                    outer.accepted.append((dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@cache
def bottle_profile() -> Profile:
    """A tiny zero-shot profile of a bottle (made once: its prompts take a second to encode)."""
    from winclip.inspection.profile import Profile

    from . import make_model

    return Profile.create(make_model(), "bottle", [])


def make_profile(folder: Path) -> Path:
    """The tiny zero-shot profile saved as the folder `bottle` under `folder`."""
    path = folder / "bottle"
    bottle_profile().save(path)
    return path


def photo_bytes(seed: int, size: int = 64) -> bytes:
    """A PNG of a textured image (a different one per seed)."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(textured(np.random.default_rng(seed), size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_slowly(path: Path, data: bytes, *, chunks: int = 4, pause: float = 0.02, temp: str | None = ".part") -> None:
    """Write `data` in chunks with pauses, under a temporary name renamed at the end (temp=None: in place)."""
    target = path if temp is None else path.with_name(path.name + temp)
    step = max(1, len(data) // chunks)
    with open(target, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            time.sleep(pause)
    if temp is not None:
        os.rename(target, path)
