"""Prometheus metrics of one replica (`GET /metrics`, prometheus-client).

Each `winclip serve` is one process (one uvicorn worker, one model worker thread), so its
metrics live in that process, in a registry of its own (`Metrics.registry`, not the client's
global one: two apps in one test process do not share counters), and no multiprocess mode is
needed. Run several replicas and Prometheus scrapes each one (list every replica as a target,
not the load balancer) and sums across them, e.g. `sum by (profile, label)
(rate(winclip_images_total[5m]))`.

Requests are timed by `MetricsMiddleware`, the outermost middleware, so refusals by the other
middlewares (403, 413) are counted too; `route` is the route's template
(`/v1/profiles/{name}/predict`, matched also for requests refused before routing), never the
raw path, so a scan of random URLs adds one series (`unmatched`), not one per URL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import HttpMiddleware

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # images per forward batch
UNMATCHED = "unmatched"  # the route label of a request no route matched
SERVER_ERROR = 500


class Metrics:
    """Every metric of one replica, in its own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=r)
        self.latency = Histogram(
            "winclip_http_request_duration_seconds",
            "time from the request's arrival to the end of its response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "winclip_http_responses", "responses by route and status", ["method", "route", "status"], registry=r
        )
        self.errors = Counter("winclip_http_errors", "responses with a status >= 400", ["status"], registry=r)
        self.batch_size = Histogram(
            "winclip_batch_size", "images per batch of the model worker", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("winclip_queue_depth", "images and jobs waiting for the model worker", registry=r)
        self.images = Counter(
            "winclip_images", "images inspected and recorded, by profile and label", ["profile", "label"], registry=r
        )
        self.not_recorded = Counter(
            "winclip_images_not_recorded", "images inspected whose rows could not be written (answered 503)", registry=r
        )
        self.memory_in_flight = Gauge(
            "winclip_memory_in_flight_bytes", "memory budget held by the requests being served (bytes)", registry=r
        )
        self.profiles = Gauge("winclip_profiles", "profiles served and refused", ["state"], registry=r)
        self.revision = Gauge(
            "winclip_profile_revision", "the revision of each served profile", ["profile"], registry=r
        )
        self.reloads = Counter(
            "winclip_profile_reloads", "profiles (re)loaded after another replica changed them", ["profile"], registry=r
        )
        self.kept_bytes = Gauge("winclip_kept_bytes", "bytes of the photos kept for audit", registry=r)
        self.kept_files = Gauge("winclip_kept_photos", "photos kept for audit (each with its overlay)", registry=r)
        self.evicted = Counter("winclip_kept_evicted", "kept photos removed to stay within the budget", registry=r)
        self.keep_failures = Counter("winclip_keep_failures", "photos that could not be kept", registry=r)

    def watch(
        self, *, queue: Callable[[], float], memory: Callable[[], float], served: Callable[[], tuple[int, int]]
    ) -> None:
        """Gauges read at scrape time: the worker's queue, the memory budget, the profiles (served, refused)."""
        self.queue_depth.set_function(queue)
        self.memory_in_flight.set_function(memory)
        self.profiles.labels("served").set_function(lambda: served()[0])
        self.profiles.labels("refused").set_function(lambda: served()[1])

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type (OpenMetrics when the scraper asks for it)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


def api_templates(app: FastAPI) -> list[tuple[str, re.Pattern]]:
    """The path templates of the app's API (its OpenAPI paths) with their regular expressions."""
    return [(path, compile_path(path)[0]) for path in app.openapi()["paths"]]


class MetricsMiddleware(HttpMiddleware):
    """ASGI middleware: each request's duration, and its status, by route template (module docstring)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics
        self._templates: list[tuple[str, re.Pattern]] | None = None

    def route_template(self, scope: Scope) -> str:
        """The template of the route that served a request, or would have: a refusal by a middleware comes before
        routing, so its path is matched against the API's templates; UNMATCHED when none matches."""
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path", UNMATCHED)
        if self._templates is None:
            self._templates = api_templates(scope["app"])
        return next((t for t, pattern in self._templates if pattern.match(scope["path"])), UNMATCHED)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = SERVER_ERROR  # unless a response starts

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = self.route_template(scope)
            method = scope["method"]
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
            self.metrics.responses.labels(method, route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()
