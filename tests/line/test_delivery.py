"""The outbox's delivery: in order, retried with back-off until confirmed; the webhook signs each POST with
HMAC-SHA256 and is retried on errors and redirects."""

from __future__ import annotations

import hmac
import io
import json
import threading
import time

import pytest

pytest.importorskip("sqlalchemy", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")

from helpers.line import Receiver, wait_until
from winclip.line.outbox import Delivery, DeliveryError, Outbox
from winclip.line.webhook import MESSAGE_ID_HEADER, SIGNATURE_HEADER, WebhookSink, check_url, read_secret, signature

SECRET = b"0123456789abcdef-secret"


class Flaky:
    """A sink that refuses the first `failures` attempts, then confirms everything."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[tuple[str, float]] = []
        self.sent: list[str] = []

    def send(self, message_id: str, body: str) -> None:
        self.attempts.append((message_id, time.monotonic()))
        if len(self.attempts) <= self.failures:
            raise DeliveryError("refused")
        self.sent.append(message_id)

    def close(self) -> None:
        pass


def test_messages_are_delivered_in_order_and_a_refused_one_is_retried_with_growing_waits(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    for i in range(5):
        outbox.put(f"{i:032x}", json.dumps({"i": i}), ["flaky"])
    sink, log = Flaky(failures=3), io.StringIO()
    d = Delivery(outbox, sink, min_backoff_s=0.05, max_backoff_s=0.15, log=log)
    d.start()
    try:
        assert wait_until(lambda: len(sink.sent) == 5, 10)
    finally:
        d.stop()
        d.join()
        outbox.close()
    assert sink.sent == [f"{i:032x}" for i in range(5)]
    first = [t for mid, t in sink.attempts if mid == f"{0:032x}"]
    assert len(first) == 4  # 3 refusals, then confirmed: the next message waited for it
    waits = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1 and waits[2] >= 0.15  # doubling, capped at 0.15
    assert log.getvalue().count("refused") == 1 and "delivering again" in log.getvalue()  # one line per outage


def test_the_webhook_is_signed_and_retried_until_it_answers_2xx(tmp_path):
    receiver = Receiver(statuses=(500, 503, 302))
    outbox = Outbox(tmp_path / "o.sqlite")
    bodies = [json.dumps({"message_id": f"{i:032x}", "n": i}) for i in range(3)]
    for i, body in enumerate(bodies):
        outbox.put(f"{i:032x}", body, ["webhook"])
    d = Delivery(outbox, WebhookSink(receiver.url, secret=SECRET), min_backoff_s=0.02, max_backoff_s=0.05)
    d.start()
    try:
        assert wait_until(lambda: len(receiver.accepted) == 3, 10)
    finally:
        d.stop()
        d.join()
        receiver.close()
        outbox.close()
    assert len(receiver.attempts) == 6  # 500, 503 and a redirect were not confirmations
    assert [body.decode() for _, body in receiver.accepted] == bodies
    for headers, body in receiver.accepted:
        expected = "sha256=" + hmac.new(SECRET, body, "sha256").hexdigest()
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
        assert headers[MESSAGE_ID_HEADER] == json.loads(body)["message_id"]
        assert headers["Content-Type"] == "application/json"
    assert signature(SECRET, b"x") != signature(SECRET + b"!", b"x")


def test_an_unreachable_webhook_is_a_delivery_error_naming_it():
    receiver = Receiver()
    url = receiver.url
    receiver.close()
    with pytest.raises(DeliveryError, match="cannot be reached"):
        WebhookSink(url, timeout_s=1).send("0" * 32, "{}")


def test_webhook_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--webhook ftp://x"):
        check_url("ftp://x")
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        read_secret(str(short))
    with pytest.raises(ValueError, match="cannot read it"):
        read_secret(str(tmp_path / "missing"))
    (tmp_path / "ok").write_bytes(SECRET + b"\n")
    assert read_secret(str(tmp_path / "ok")) == SECRET


def test_delivery_threads_stop_promptly(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    d = Delivery(outbox, Flaky(0))
    d.start()
    start = time.monotonic()
    d.stop()
    d.join(5)
    outbox.close()
    assert not d.is_alive() and time.monotonic() - start < 2
    assert isinstance(d, threading.Thread)
