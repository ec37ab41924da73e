"""MQTT out (paho-mqtt >= 2): each message at QoS 1 on `<prefix>/<profile>/results`, and retained on
`<prefix>/<profile>/last` (the last result, for a dashboard that connects later); `<status topic>` says
`online` (retained) while connected, and the broker publishes the will `offline` (retained) when the connection
is lost without a goodbye.

`--mqtt mqtt://HOST[:PORT]/PREFIX` (1883), `mqtts://HOST[:PORT]/PREFIX` for TLS (8883; the system's CAs, or
`--mqtt-ca FILE`, and a client certificate with `--mqtt-cert`/`--mqtt-key`). The user name and password come
from a file (`--mqtt-credentials FILE`: one line `USER:PASSWORD`), never from the command line. paho reconnects
by itself with a back-off from 1 s to 8 s.

`send` publishes a message once and waits for both PUBACKs; when they do not come (the broker is down), the
outbox calls `send` again later with the same message, and this sink keeps waiting for the publications it made
(paho sends them again, flagged DUP, once it is reconnected) instead of publishing the message anew: so a copy
is duplicated only as QoS 1 allows, always with the same message id.
"""

from __future__ import annotations

import json
import secrets
import ssl
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from .outbox import DeliveryError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
KEEPALIVE_S = 30
RECONNECT_S = (1, 8)  # paho's reconnect back-off, min and max seconds


@dataclass(frozen=True)
class MqttTarget:
    """A broker and a topic prefix, parsed from `--mqtt URL` and its credential and TLS files."""

    host: str
    port: int
    prefix: str
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        credentials: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> MqttTarget:
        """ValueError naming the option and the problem when the URL or a file is unusable."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"--mqtt {url}: use mqtt://HOST:PORT/TOPIC or mqtts://HOST:PORT/TOPIC")
        if parts.username or parts.password:
            raise ValueError("--mqtt: put the user name and password in a file (--mqtt-credentials FILE), not the URL")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ValueError(f"--mqtt {url}: {exc}") from None
        prefix = unquote(parts.path).strip("/")
        wild = any(c in prefix for c in "+#\0") or "#" in url or "?" in url  # '#' and '?' end a URL's path
        if not parts.hostname or not prefix or wild:
            raise ValueError(f"--mqtt {url}: needs a host and a topic without wildcards, e.g. mqtt://host:1883/line1")
        tls = parts.scheme == "mqtts"
        if not tls and (ca_file or cert_file or key_file):
            raise ValueError("--mqtt-ca, --mqtt-cert and --mqtt-key go with an mqtts:// URL")
        if (cert_file is None) != (key_file is None):
            raise ValueError("--mqtt-cert and --mqtt-key go together")
        for option, path in (("--mqtt-ca", ca_file), ("--mqtt-cert", cert_file), ("--mqtt-key", key_file)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{option} {path}: no such file")
        username, password = read_credentials(credentials) if credentials else (None, None)
        return cls(parts.hostname, port, prefix, tls, username, password, ca_file, cert_file, key_file)

    def topic(self, profile: str, leaf: str) -> str:
        """`<prefix>/<profile>/<leaf>`."""
        return f"{self.prefix}/{profile}/{leaf}"


def read_credentials(path: str) -> tuple[str, str]:
    """`USER:PASSWORD` from the first line of a file (ValueError naming it when unusable)."""
    try:
        line = Path(path).read_text().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"--mqtt-credentials {path}: cannot read a USER:PASSWORD line ({exc})") from None
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise ValueError(f"--mqtt-credentials {path}: the first line must be USER:PASSWORD")
    return user, password


class MqttSink:
    """Publishes messages to one broker (module docstring); `status_topic` carries online/offline."""

    name = "mqtt"

    def __init__(
        self, target: MqttTarget, *, status_topic: str, timeout_s: float = 10.0, log: TextIO = sys.stderr
    ) -> None:
        import paho.mqtt.client as mqtt

        self.target = target
        self.status_topic = status_topic
        self.timeout_s = timeout_s
        self.log = log
        self._acked: set[int] = set()  # PUBACKs of messages' publications not collected by `send` yet
        self._status: set[int] = set()  # publications of `online` (their PUBACKs are not waited for)
        self._cond = threading.Condition()
        self._inflight: tuple[str, list[int]] | None = None  # message id, paho mids of its publications
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"winclip-{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.will_set(status_topic, "offline", qos=1, retain=True)
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
        if target.tls:
            client.tls_set(
                ca_certs=target.ca_file, certfile=target.cert_file, keyfile=target.key_file,
                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )  # fmt: skip
        client.reconnect_delay_set(*RECONNECT_S)
        client.on_connect = self._connected
        client.on_publish = self._published
        self.client = client
        client.connect_async(target.host, target.port, keepalive=KEEPALIVE_S)
        client.loop_start()

    def _connected(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            print(f"winclip: mqtt: {self.where}: connection refused ({reason_code})", file=self.log)
            return
        info = client.publish(self.status_topic, "online", qos=1, retain=True)
        with self._cond:
            self._status.add(info.mid)  # runs on paho's thread: its PUBACK cannot have been handled yet

    def _published(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cond:
            if mid in self._status:
                self._status.discard(mid)
                return
            self._acked.add(mid)
            self._cond.notify_all()

    @property
    def where(self) -> str:
        """`host:port` of the broker."""
        return f"{self.target.host}:{self.target.port}"

    def send(self, message_id: str, body: str) -> None:
        """Publish (once) and wait for the PUBACKs; DeliveryError when they do not come within the timeout."""
        if self._inflight is None or self._inflight[0] != message_id:
            if not self.client.is_connected():
                raise DeliveryError(f"the MQTT broker {self.where} is not connected")
            profile = json.loads(body)["profile"]
            infos = [
                self.client.publish(self.target.topic(profile, "results"), body, qos=1),
                self.client.publish(self.target.topic(profile, "last"), body, qos=1, retain=True),
            ]
            self._inflight = (message_id, [info.mid for info in infos])
        mids = self._inflight[1]
        with self._cond:
            done = self._cond.wait_for(lambda: all(m in self._acked for m in mids), self.timeout_s)
            if not done:
                raise DeliveryError(f"no PUBACK from the MQTT broker {self.where} within {self.timeout_s:g} s")
            self._acked.difference_update(mids)
        self._inflight = None

    def close(self) -> None:
        """Say `offline` (retained), disconnect, stop paho's thread."""
        if self.client.is_connected():
            with suppress(RuntimeError, ValueError):  # lost meanwhile: the will says it
                self.client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
