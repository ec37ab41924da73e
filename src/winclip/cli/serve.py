"""`winclip serve`: the HTTP inspection service and web page over a folder of profiles.

Loads and warms every profile in --profiles, then serves the API (OpenAPI at /docs) and the web page at /.
Concurrent requests are batched on one model; every prediction is recorded in a database. The model options
define the model for new profiles; existing profiles made with another backbone or checkpoint are refused
(listed by /health/ready).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_command, add_model_options, add_runtime_options, model_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    p = add_command(subparsers, "serve", __doc__)
    p.add_argument("--profiles", required=True, help="folder of profile folders (created if missing); new ones go here")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///file or postgresql://user:pass@host/db (default: <profiles>/inspections.sqlite)",
    )
    p.add_argument("--batch-window-ms", type=float, default=10.0, help="how long requests are collected into one batch")
    p.add_argument("--max-batch", type=int, default=32, help="images per batch at most")
    p.add_argument("--max-images", type=int, default=16, help="images per request at most")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="size limit per uploaded file in MiB")
    p.add_argument("--min-area", type=int, default=0, help="drop regions smaller than this many pixels")
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; 1 keeps a shared CPU from stalling)"
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    add_model_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options and the database, then serve until interrupted."""
    try:
        import sqlalchemy
        import torch
        import uvicorn

        from ..service.app import create_app
        from ..service.config import MiB, ServiceConfig
        from ..service.db import Recorder
    except ImportError as exc:
        raise ValueError(
            f"winclip serve needs the 'serve' extra ({exc.name} is missing): pip install 'winclip[serve]'"
        ) from None
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
    if args.port > 65535 or args.max_upload_mb <= 0 or args.batch_window_ms < 0:
        raise ValueError("--port must be <= 65535, --max-upload-mb > 0 and --batch-window-ms >= 0")
    profiles = Path(args.profiles)
    if profiles.exists() and not profiles.is_dir():
        raise ValueError(f"--profiles {profiles}: not a folder")
    profiles.mkdir(parents=True, exist_ok=True)
    config = ServiceConfig(
        profiles=profiles,
        model=model_spec(args),
        batch_size=args.batch_size,
        db_url=args.db,
        window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        max_images=args.max_images,
        max_file_bytes=int(args.max_upload_mb * MiB),
        min_area=args.min_area,
    )
    try:
        recorder = Recorder(config.database)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise ValueError(f"--db: cannot open the database: {str(exc).splitlines()[0]}") from None
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def stop(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    app = create_app(config, recorder, on_fatal=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=args.access_log,
            timeout_graceful_shutdown=60,
        )
    )
    print(
        f"winclip serve: {recorder.dialect} database; page http://{args.host}:{args.port}/, API docs /docs",
        file=sys.stderr,
    )
    server.run()
    if fatal:
        print(f"winclip: error: {fatal[0]}", file=sys.stderr)
        return 2
    return 0
