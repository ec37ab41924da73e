"""Who may talk to the service: the API key, same-origin browsers, and the headers every response carries.

- `key_matches`: the bearer key, compared in constant time (`hmac.compare_digest`); `check_key`:
  a key is at least MIN_KEY_CHARS printable ASCII characters without spaces (what a shell, curl
  and a browser all send unchanged in a header).
- `BrowserGuard` (pure ASGI middleware, the outermost that refuses): decides from the headers
  alone, before anything reads or spools the body. It refuses (403) a request that changes
  something (any method but GET, HEAD, OPTIONS) when a browser says it comes from another
  site: `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` whose scheme, host and
  port differ from the request's. Without an API key it also refuses a `Host` that is not a
  loopback name (a DNS rebinding page would send its own name). With a key it refuses (401)
  every `/v1` and `/metrics` request without `Authorization: Bearer <key>`. A refused request's
  body is never read: the answer carries `Connection: close`, so the server drops it with the
  connection. Every response gets `X-Content-Type-Options: nosniff`, a restrictive
  Content-Security-Policy (`PAGE_CSP` for the page, `DOCS_CSP` for the Swagger UI, `API_CSP`
  for everything else), `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
"""

from __future__ import annotations

import hmac
import ipaddress
import sys
from typing import TextIO
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE = frozenset({"same-origin", "none"})  # Sec-Fetch-Site values of a same-origin or typed-in request
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MIN_KEY_CHARS = 16
PROTECTED = ("/v1/", "/metrics")  # what the API key guards (the page, /docs and /health/* stay open)
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Swagger UI styles elements inline and draws its icons from data: URLs; its start-up script is a file.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
DOCS_PATHS = ("/docs", "/docs-static/")
MISSING_KEY = "missing or wrong API key: send the header Authorization: Bearer <key>"


def key_matches(expected: str, authorization: str | None) -> bool:
    """True when an `Authorization` header is `Bearer <expected>` (constant-time comparison)."""
    scheme, _, given = (authorization or "").partition(" ")
    ok = hmac.compare_digest(given.strip().encode(), expected.encode())
    return ok and scheme.lower() == "bearer"


def check_key(key: str, source: str) -> str:
    """The key if usable, else ValueError naming `source` (at least MIN_KEY_CHARS printable ASCII characters,
    no spaces: a header carries anything else differently from client to client)."""
    key = key.strip()
    if len(key) < MIN_KEY_CHARS or not key.isascii() or not key.isprintable() or " " in key:
        raise ValueError(
            f"{source}: the API key must be at least {MIN_KEY_CHARS} printable ASCII characters without spaces; make "
            'one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return key


def is_loopback(host: str) -> bool:
    """True for localhost names and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(value: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{value}")
    default = {"http": 80, "https": 443}.get(scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return (parts.hostname or ""), port


def refusal(headers: dict[str, str], method: str, scheme: str, loopback_only: bool) -> str | None:
    """Why a request must be refused (one line), or None."""
    host = headers.get("host", "")
    if loopback_only and not is_loopback(_host_port(host, scheme)[0]):
        return f"Host {host[:100]!r} refused: without an API key only localhost may be used (DNS rebinding)"
    if method in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme != scheme or _host_port(parts.netloc, parts.scheme) != _host_port(host, scheme):
            return f"cross-origin request refused: Origin {origin[:100]!r} is not this server ({scheme}://{host[:100]})"
    return None


def unauthorized(headers: dict[str, str], path: str, api_key: str | None) -> bool:
    """True when a request to a protected path lacks the key (there is one)."""
    protected = path.startswith(PROTECTED) or path == "/v1"
    return api_key is not None and protected and not key_matches(api_key, headers.get("authorization"))


def unread_refusal(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to a request refused before its body was read: the connection is closed after it."""
    return JSONResponse({"detail": detail}, status_code=status, headers={**(headers or {}), "Connection": "close"})


def csp_for(path: str) -> str:
    """The Content-Security-Policy of a response."""
    if path == "/" or path.startswith("/static/"):
        return PAGE_CSP
    if path.startswith(DOCS_PATHS):
        return DOCS_CSP
    return API_CSP


class HttpMiddleware:
    """A pure ASGI middleware: lifespan and websocket traffic passes through, `http` handles each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def internal_error(exc: Exception) -> JSONResponse:
    """The 500 answer to an unexpected exception: its type and the first line of its message."""
    line = str(exc).splitlines()[0] if str(exc) else ""
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {line}"}, status_code=500)


class BrowserGuard(HttpMiddleware):
    """ASGI middleware: same-origin changes only, loopback Host without a key, the key on /v1 and /metrics,
    security headers (module docstring)."""

    def __init__(
        self, app: ASGIApp, *, loopback_only: bool, api_key: str | None = None, log: TextIO = sys.stderr
    ) -> None:
        super().__init__(app)
        self.loopback_only = loopback_only
        self.api_key = api_key
        self.log = log

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", csp_for(scope["path"]).encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]

        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        why = refusal(headers, scope["method"], scope.get("scheme", "http"), self.loopback_only)
        if why is None and not unauthorized(headers, scope["path"], self.api_key):
            try:
                await self.app(scope, receive, with_headers)
            except Exception as exc:  # answered here, with the headers; re-raised for the server's log
                if not started:
                    await internal_error(exc)(scope, receive, with_headers)
                raise
            return
        client = (scope.get("client") or ("?", 0))[0]
        if why is None:  # the key is missing or wrong
            print(f"winclip serve: 401 {scope['method']} {scope['path']} from {client}: missing or wrong API key",
                  file=self.log)  # fmt: skip
            refused = unread_refusal(401, MISSING_KEY, {"WWW-Authenticate": "Bearer"})
        else:
            print(f"winclip serve: refused {scope['method']} {scope['path']} from {client}: {why}", file=self.log)
            refused = unread_refusal(403, why)
        await refused(scope, receive, with_headers)
