"""Webhook out: each message POSTed as JSON to `--webhook URL`, signed, through the same outbox as MQTT.

Headers: `Content-Type: application/json`, `X-Winclip-Message-Id` (the message's id: a receiver drops a
second copy), and, with `--webhook-secret-file FILE`, `X-Winclip-Signature: sha256=<hex>`, the HMAC-SHA256 of
the exact body bytes under the file's secret (`signature`): a receiver computes it again and compares in
constant time (`hmac.compare_digest`). A 2xx answer confirms the message; anything else (another status, a
redirect, no answer within the timeout) is retried with the outbox's back-off.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .. import __version__
from .outbox import DeliveryError

SIGNATURE_HEADER = "X-Winclip-Signature"
MESSAGE_ID_HEADER = "X-Winclip-Message-Id"


def signature(secret: bytes, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: str) -> bytes:
    """The secret in a file (surrounding white space removed); ValueError naming the file when unusable."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"--webhook-secret-file {path}: cannot read it ({exc.strerror or exc})") from None
    if len(secret) < 16:
        raise ValueError(f"--webhook-secret-file {path}: the secret must be at least 16 bytes")
    return secret


def check_url(url: str) -> str:
    """An http(s) URL with a host, else ValueError naming --webhook."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--webhook {url}: use an http:// or https:// URL")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that did not confirm the message (a POST is never replayed elsewhere)."""

    def redirect_request(self, *args: object) -> None:
        return None


class WebhookSink:
    """POSTs each message to one URL (module docstring)."""

    name = "webhook"

    def __init__(self, url: str, *, secret: bytes | None = None, timeout_s: float = 10.0) -> None:
        self.url = check_url(url)
        self.secret = secret
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect)

    def send(self, message_id: str, body: str) -> None:
        """POST the body; DeliveryError unless the answer is 2xx."""
        data = body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"winclip/{__version__}",
            MESSAGE_ID_HEADER: message_id,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, data)
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                answer.read()
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"the webhook {self.url} cannot be reached ({reason})") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"the webhook {self.url} answered HTTP {status}")

    def close(self) -> None:
        """Nothing to release (one connection per message)."""
