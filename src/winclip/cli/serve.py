"""`winclip serve`: the HTTP inspection service and web page over a folder of profiles.

Loads and warms every profile in --profiles, then serves the API (OpenAPI at /docs) and the web page at /.
Concurrent requests are batched on one model; every prediction is recorded in a database. The model options
define the model for new profiles; existing profiles made with another backbone or checkpoint are refused
(listed by /health/ready). With an API key (--api-key-file or the environment variable WINCLIP_API_KEY) every
/v1 request (and /metrics) needs the header "Authorization: Bearer <key>"; without one only a loopback --host is
accepted (unless --insecure-no-auth). Several replicas started on one --db and one --profiles folder serve the same
profiles: a change through one is served by all within --sync-interval. The record's schema is upgraded at start.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..images import DEFAULT_MEMORY_BUDGET
from .common import add_command, add_model_options, add_runtime_options, finite_float, require_extra
from .requests import GIGA, KEY_ENV, MiB, ServeRequest
from .watch import add_sink_options

if TYPE_CHECKING:  # the service is imported inside `run` (the command line parses without it)
    from ..service.config import ServiceConfig
    from ..service.db import Recorder
    from ..service.retention import Keeper


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    p = add_command(subparsers, "serve", __doc__)
    p.add_argument("--profiles", required=True, help="folder of profile folders (created if missing); new ones go here")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (other than loopback: needs a key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key-file",
        metavar="FILE",
        help=f"file holding the API key that every /v1 request must send as a Bearer token (or set {KEY_ENV})",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve a non-loopback --host without a key: anyone who reaches the port can change profiles",
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///file or postgresql://user:pass@host/db (default: <profiles>/inspections.sqlite)",
    )
    p.add_argument("--db-timeout", type=finite_float, default=10.0, help="seconds to wait for PostgreSQL to connect")
    p.add_argument(
        "--sync-interval",
        type=finite_float,
        default=1.0,
        help="replicas: seconds between two polls of the profile revisions; a profile created or changed through "
        "another replica on the same --db and --profiles is served here within this plus its loading time",
    )
    p.add_argument(
        "--keep",
        metavar="LABELS",
        help="keep the photos labelled e.g. anomalous,review and their overlays for audit (needs --keep-max-gb)",
    )
    p.add_argument(
        "--keep-max-gb", type=finite_float, help="disk budget of the kept photos in GB (oldest removed first)"
    )
    p.add_argument("--keep-dir", metavar="DIR", help="where kept photos go (default <profiles>/kept; one per replica)")
    p.add_argument(
        "--batch-window-ms", type=finite_float, default=10.0, help="how long requests are collected into one batch"
    )
    p.add_argument("--max-batch", type=int, default=32, help="images per batch at most")
    p.add_argument("--max-images", type=int, default=16, help="images per request at most")
    p.add_argument("--max-upload-mb", type=finite_float, default=20.0, help="size limit per uploaded file in MiB")
    p.add_argument("--max-megapixels", type=finite_float, default=50.0, help="decoded size limit per image")
    p.add_argument(
        "--memory-budget-mb",
        type=finite_float,
        default=DEFAULT_MEMORY_BUDGET / MiB,
        help="memory budget in MiB: decoded images, maps and pictures of all requests served at once, estimated from "
        "each image's header (over it: 503 + Retry-After)",
    )
    p.add_argument(
        "--uploads-mb-in-flight",
        type=finite_float,
        help="request bodies being received at once, in MiB (over it: 503 + Retry-After; default: twice the "
        "largest request, --max-images x --max-upload-mb)",
    )
    p.add_argument("--min-area", type=int, default=0, help="drop regions smaller than this many pixels")
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; 1 keeps a shared CPU from stalling)"
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="load balancers trusted to set X-Forwarded-Proto and X-Forwarded-For (comma-separated addresses; "
        "default: 127.0.0.1, or $FORWARDED_ALLOW_IPS)",
    )
    add_sink_options(p)
    p.add_argument(
        "--outbox",
        metavar="FILE",
        help="with --mqtt/--webhook: the messages' outbox (default <profiles>/outbox-PORT.sqlite)",
    )
    add_model_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def open_stores(config: ServiceConfig) -> tuple[Recorder, Keeper | None]:
    """The record (its schema upgraded) and, with --keep, the keep folder; ValueError in one line when they cannot
    be opened."""
    import sqlalchemy

    from ..service.db import Recorder, one_line
    from ..service.migrate import SchemaError
    from ..service.retention import Keeper, KeepError

    print("winclip serve: opening the database", file=sys.stderr)
    try:
        recorder = Recorder.of(config)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, SchemaError) as exc:
        raise ValueError(f"--db: cannot open the database: {one_line(exc)}") from None
    if recorder.schema_change:
        print(f"winclip serve: {recorder.schema_change}", file=sys.stderr)
    if not config.keep:
        return recorder, None
    try:
        keeper = Keeper.of(config)
    except KeepError as exc:
        recorder.close()
        raise ValueError(str(exc)) from None
    print(
        f"winclip serve: keeping {', '.join(sorted(config.keep))} photos in {keeper.folder} ({keeper.count} there, "
        f"{keeper.total / GIGA:.3f} of {config.keep_max_bytes / GIGA:g} GB)",
        file=sys.stderr,
    )
    return recorder, keeper


def run(args: argparse.Namespace) -> int:
    """Check the options and the database, then serve until interrupted."""
    require_extra("serve", "serve", ("alembic", "prometheus_client", "sqlalchemy", "uvicorn"))
    return serve(ServeRequest.of(args))


def serve(request: ServeRequest) -> int:
    """Open the record (and keep folder), build the app, serve until interrupted; 2 after a fatal error."""
    import torch
    import uvicorn

    from ..service.app import create_app

    config = request.config
    config.profiles.mkdir(parents=True, exist_ok=True)
    recorder, keeper = open_stores(config)
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def stop(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    if request.threads is not None:
        torch.set_num_threads(request.threads)
    publisher = None
    if request.sinks is not None and request.outbox is not None:
        from ..line.publish import Publisher

        publisher = Publisher(request.outbox, request.sinks.sinks())
        print(f"winclip serve: results to the line through {request.outbox}", file=sys.stderr)
    app = create_app(config, recorder, keeper=keeper, on_fatal=stop, on_recorded=publisher)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=request.host,
            port=request.port,
            log_level="info",
            access_log=request.access_log,
            forwarded_allow_ips=request.forwarded_allow_ips,
            timeout_graceful_shutdown=60,
        )
    )
    auth = "API key required on /v1 and /metrics" if config.api_key else "NO AUTHENTICATION"
    print(
        f"winclip serve: {recorder.dialect} database; {auth}; page http://{request.host}:{request.port}/, "
        "API docs /docs",
        file=sys.stderr,
    )
    try:
        server.run()
    finally:
        if publisher is not None:
            publisher.close()
    if fatal:
        print(f"winclip: error: {fatal[0]}", file=sys.stderr)
        return 2
    return 0
