"""`winclip watch`: inspect every photo that appears in a folder and send each result to the line.

Watches IN (recursively) and inspects each photo once it is complete (closed after writing or renamed into
place; else unchanged for --settle-seconds), with the outputs of `winclip predict` in --out and a row in the
record (SQLite in --out, or --db). Each photo is finished exactly once, across restarts and kills; then it is
moved to IN/../done/ (unreadable ones to IN/../failed/ with the reason), deleted or kept (--after). Each result
is published over MQTT (--mqtt) and/or POSTed to a webhook (--webhook), kept in an on-disk outbox while they
are unreachable and sent in order when they return. Runs until interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..images import DEFAULT_MAX_PIXELS
from .common import (
    MAX_COUNT,
    add_command,
    add_model_options,
    add_runtime_options,
    count,
    load_model,
    number,
    require_extra,
)
from .requests import MAX_MEGAPIXELS, MAX_THREADS, MEGA, WatchRequest

MAX_SECONDS = 3600.0  # --settle-seconds and --sync-interval at most


def add_sink_options(parser: argparse.ArgumentParser) -> None:
    """--mqtt and --webhook with their files (shared with `winclip serve`)."""
    g = parser.add_argument_group("to the line (each optional; messages kept in an on-disk outbox until delivered)")
    g.add_argument("--mqtt", metavar="URL", help="publish each result: mqtt://HOST:PORT/TOPIC (mqtts:// for TLS)")
    g.add_argument("--mqtt-credentials", metavar="FILE", help="file whose first line is USER:PASSWORD")
    g.add_argument("--mqtt-ca", metavar="FILE", help="mqtts: CA certificates to trust (default: the system's)")
    g.add_argument("--mqtt-cert", metavar="FILE", help="mqtts: client certificate (with --mqtt-key)")
    g.add_argument("--mqtt-key", metavar="FILE", help="mqtts: the client certificate's key")
    g.add_argument("--webhook", metavar="URL", help="POST each result as JSON to this http(s) URL")
    g.add_argument(
        "--webhook-secret-file", metavar="FILE", help="sign each POST: X-Winclip-Signature: sha256=HMAC(secret, body)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `watch` subcommand."""
    p = add_command(subparsers, "watch", __doc__)
    p.add_argument("inbox", metavar="IN", help="the folder the camera writes into")
    p.add_argument("--profile", required=True, help="profile folder (its name is the profile's name in the record)")
    p.add_argument("--out", required=True, help="output folder: overlays, masks, results, the journal")
    p.add_argument(
        "--after", choices=("done", "delete", "keep"), default="done", help="what to do with a finished photo"
    )
    p.add_argument(
        "--db", metavar="URL", help="the record: sqlite:///FILE or postgresql://... (default: OUT/inspections.sqlite)"
    )
    p.add_argument("--settle-seconds", type=number(0, MAX_SECONDS), default=1.0,
                   help="a file unchanged this long is complete (without a close or rename event)")  # fmt: skip
    p.add_argument("--poll", action="store_true", help="no inotify: completion by --settle-seconds alone")
    p.add_argument(
        "--queue",
        type=count(1, MAX_COUNT),
        default=64,
        help="complete photos held in memory; more wait on disk, in order",
    )
    p.add_argument("--outbox-max", type=count(1, MAX_COUNT), default=100_000,
                   help="messages kept while the line is unreachable; when full, scoring waits")  # fmt: skip
    p.add_argument("--sync-interval", type=number(0, MAX_SECONDS, low_open=True), default=1.0,
                   help="seconds between two checks of the profile for changes (folder or station)")  # fmt: skip
    p.add_argument("--metrics", type=count(1, 65535), metavar="PORT", help="serve Prometheus figures on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of --metrics")
    p.add_argument("--min-area", type=count(0, MAX_COUNT), default=0, help="drop regions smaller than this many pixels")
    p.add_argument("--max-megapixels", type=number(0, MAX_MEGAPIXELS, low_open=True), default=DEFAULT_MAX_PIXELS / MEGA,
                   help="photos larger than this (decoded) fail instead of being decoded")  # fmt: skip
    p.add_argument("--save-maps", action="store_true", help="also write the float32 maps as TIFF")
    p.add_argument("--threads", type=count(1, MAX_THREADS), help="torch CPU threads (default: torch's)")
    add_sink_options(p)
    add_model_options(p, profile_defaults=True)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`winclip watch`: the request, then watch until interrupted."""
    require_extra("watch", "line", ("paho.mqtt", "sqlalchemy", "watchdog"))  # MQTT out, the record, inotify
    return watch(WatchRequest.of(args))


def watch(request: WatchRequest) -> int:
    """Load the profile's model, start the sinks and the metrics, run the line until SIGINT/SIGTERM; 0."""
    import torch

    from ..inspection.profile import Profile
    from ..line.metrics import LineMetrics
    from ..line.run import Line

    config = request.config
    if request.threads is not None:
        torch.set_num_threads(request.threads)
    profile = Profile.load(config.profile)
    model = load_model(request.model, profile.options, profile=profile)
    metrics = LineMetrics()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop_metrics = metrics.serve(request.metrics_port, request.metrics_host) if request.metrics_port else None
    name = config.profile.resolve().name
    sinks = request.sinks.sinks(request.sinks.mqtt.topic(name, "status") if request.sinks.mqtt else None)
    line = Line(config, model, sinks=sinks, metrics=metrics)
    print(f"winclip watch: {config.inbox} -> {config.out} (after: {config.after}; sinks: "
          f"{', '.join(s.name for s in sinks) or 'none'})", file=sys.stderr)  # fmt: skip
    try:
        summary = line.run(stop)
    finally:
        if stop_metrics is not None:
            stop_metrics()
    print(f"watch: {summary.text()}", file=sys.stderr)
    return 0
