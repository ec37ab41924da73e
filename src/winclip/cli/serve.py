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
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import add_command, add_model_options, add_runtime_options, model_spec

if TYPE_CHECKING:  # the service is imported inside `run` (the command line parses without it)
    from ..service.config import ServiceConfig
    from ..service.db import Recorder
    from ..service.retention import Keeper

KEY_ENV = "WINCLIP_API_KEY"
MEGA = 1_000_000
GIGA = 1_000_000_000


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
    p.add_argument("--db-timeout", type=float, default=10.0, help="seconds to wait for PostgreSQL to connect")
    p.add_argument(
        "--sync-interval",
        type=float,
        default=1.0,
        help="replicas: seconds between two polls of the profile revisions; a profile created or changed through "
        "another replica on the same --db and --profiles is served here within this plus its loading time",
    )
    p.add_argument(
        "--keep",
        metavar="LABELS",
        help="keep the photos labelled e.g. anomalous,review and their overlays for audit (needs --keep-max-gb)",
    )
    p.add_argument("--keep-max-gb", type=float, help="disk budget of the kept photos in GB (oldest removed first)")
    p.add_argument("--keep-dir", metavar="DIR", help="where kept photos go (default <profiles>/kept; one per replica)")
    p.add_argument("--batch-window-ms", type=float, default=10.0, help="how long requests are collected into one batch")
    p.add_argument("--max-batch", type=int, default=32, help="images per batch at most")
    p.add_argument("--max-images", type=int, default=16, help="images per request at most")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="size limit per uploaded file in MiB")
    p.add_argument("--max-megapixels", type=float, default=50.0, help="decoded size limit per image")
    p.add_argument(
        "--megapixels-in-flight",
        type=float,
        default=100.0,
        help="memory budget: decoded megapixels of all requests served at once (over it: 503 + Retry-After)",
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
    add_model_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def api_key(args: argparse.Namespace) -> str | None:
    """The API key from --api-key-file or WINCLIP_API_KEY (the file wins); ValueError when unusable."""
    from ..service.security import check_key

    if args.api_key_file:
        try:
            text = Path(args.api_key_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--api-key-file {args.api_key_file}: cannot read it ({exc})") from None
        return check_key(text, f"--api-key-file {args.api_key_file}")
    if os.environ.get(KEY_ENV):
        return check_key(os.environ[KEY_ENV], KEY_ENV)
    return None


def check_host(host: str, key: str | None, insecure: bool) -> None:
    """ValueError for a non-loopback address without a key (unless --insecure-no-auth)."""
    from ..service.security import is_loopback

    if key is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"--host {host} without an API key would let anyone on the network change profiles; set a key with "
            f"--api-key-file FILE or {KEY_ENV} (or pass --insecure-no-auth)"
        )


def check_numbers(args: argparse.Namespace) -> None:
    """ValueError naming the first numeric option out of range."""
    for option, value, low in (
        ("--port", args.port, 1),
        ("--max-batch", args.max_batch, 1),
        ("--max-images", args.max_images, 1),
        ("--batch-size", args.batch_size, 1),
        ("--min-area", args.min_area, 0),
    ):
        if value < low:
            raise ValueError(f"{option} must be >= {low}, got {value}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.port > 65535 or args.max_upload_mb <= 0 or args.batch_window_ms < 0 or args.db_timeout <= 0:
        raise ValueError("--port must be <= 65535, --max-upload-mb > 0, --batch-window-ms >= 0 and --db-timeout > 0")
    if not 0 < args.max_megapixels <= args.megapixels_in_flight:
        raise ValueError("--max-megapixels must be > 0 and at most --megapixels-in-flight")
    if args.sync_interval <= 0:
        raise ValueError(f"--sync-interval must be > 0 seconds, got {args.sync_interval}")


def kept_labels(args: argparse.Namespace) -> frozenset[str]:
    """The labels of --keep, checked with --keep-max-gb; ValueError naming the problem."""
    from ..inspection.decisions import LABELS

    if not args.keep:
        if args.keep_max_gb is not None or args.keep_dir:
            raise ValueError("--keep-max-gb and --keep-dir need --keep LABELS (e.g. --keep anomalous,review)")
        return frozenset()
    labels = frozenset(x.strip() for x in args.keep.split(",") if x.strip())
    unknown = sorted(labels - set(LABELS))
    if unknown or not labels:
        raise ValueError(f"--keep: {', '.join(unknown) or 'nothing'}: give labels among {', '.join(LABELS)}")
    if args.keep_max_gb is None or args.keep_max_gb <= 0:
        raise ValueError("--keep needs --keep-max-gb N (> 0): the kept photos' disk budget in GB")
    return labels


def service_config(args: argparse.Namespace, key: str | None, keep: frozenset[str]) -> ServiceConfig:
    """The ServiceConfig of the checked options (the profiles folder made if missing)."""
    from ..service.config import MiB, ServiceConfig

    profiles = Path(args.profiles)
    if profiles.exists() and not profiles.is_dir():
        raise ValueError(f"--profiles {profiles}: not a folder")
    profiles.mkdir(parents=True, exist_ok=True)
    return ServiceConfig(
        profiles=profiles,
        model=model_spec(args),
        batch_size=args.batch_size,
        db_url=args.db,
        window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        max_images=args.max_images,
        max_file_bytes=int(args.max_upload_mb * MiB),
        max_pixels=int(args.max_megapixels * MEGA),
        max_pixels_in_flight=int(args.megapixels_in_flight * MEGA),
        min_area=args.min_area,
        db_connect_timeout_s=args.db_timeout,
        api_key=key,
        insecure_no_auth=args.insecure_no_auth,
        sync_interval_s=args.sync_interval,
        keep=keep,
        keep_max_bytes=int((args.keep_max_gb or 0) * GIGA),
        keep_dir=Path(args.keep_dir) if args.keep_dir else None,
    )


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
    try:
        import alembic  # noqa: F401 - the record's migrations
        import prometheus_client  # noqa: F401 - /metrics
        import sqlalchemy  # noqa: F401 - the record
        import torch
        import uvicorn

        from ..service.app import create_app
    except ImportError as exc:
        raise ValueError(
            f"winclip serve needs the 'serve' extra ({exc.name} is missing): pip install 'winclip[serve]'"
        ) from None
    check_numbers(args)
    keep = kept_labels(args)
    key = api_key(args)
    check_host(args.host, key, args.insecure_no_auth)
    config = service_config(args, key, keep)
    recorder, keeper = open_stores(config)
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def stop(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    app = create_app(config, recorder, keeper=keeper, on_fatal=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=args.access_log,
            forwarded_allow_ips=args.forwarded_allow_ips,
            timeout_graceful_shutdown=60,
        )
    )
    auth = "API key required on /v1 and /metrics" if key else "NO AUTHENTICATION"
    print(
        f"winclip serve: {recorder.dialect} database; {auth}; page http://{args.host}:{args.port}/, API docs /docs",
        file=sys.stderr,
    )
    server.run()
    if fatal:
        print(f"winclip: error: {fatal[0]}", file=sys.stderr)
        return 2
    return 0
