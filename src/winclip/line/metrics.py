"""Prometheus figures of one `winclip watch` (`--metrics PORT`, on 127.0.0.1 unless `--metrics-host`).

`winclip_line_queue_depth` (complete photos waiting to be scored: held in memory, plus those waiting on disk
beyond `--queue`), `winclip_line_photos_total{label}` (finished photos by label, `failed` for unreadable ones:
`rate()` of it is the throughput), `winclip_line_latency_seconds` (from a photo found complete to its result
finished: recorded and in the outbox), `winclip_line_outbox_messages{sink}` (messages waiting),
`winclip_line_delivered_total{sink}`, `winclip_line_profile_revision`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LineMetrics:
    """Every figure of one watcher, in its own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.queue_depth = Gauge("winclip_line_queue_depth", "complete photos waiting to be scored", registry=r)
        self.photos = Counter(
            "winclip_line_photos", "finished photos by label (failed: unreadable)", ["label"], registry=r
        )
        self.latency = Histogram(
            "winclip_line_latency_seconds",
            "from a photo found complete to its result recorded and queued for the line",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox = Gauge("winclip_line_outbox_messages", "messages waiting in the outbox", ["sink"], registry=r)
        self.delivered = Counter("winclip_line_delivered", "messages confirmed by their sink", ["sink"], registry=r)
        self.revision = Gauge("winclip_line_profile_revision", "the revision of the profile in use", registry=r)

    def watch(self, *, queue: Callable[[], float], outbox: dict[str, Callable[[], float]]) -> None:
        """Gauges read when scraped."""
        self.queue_depth.set_function(queue)
        for sink, size in outbox.items():
            self.outbox.labels(sink).set_function(size)

    def serve(self, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
        """Serve `/metrics` on host:port in a thread; returns the function that stops it."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        return stop
