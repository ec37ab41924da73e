"""The inspection record: one row per predicted image, in SQLite or PostgreSQL (SQLAlchemy 2 Core).

One schema and one code path for both databases; only the URL differs:

- `sqlite:///path/inspections.sqlite` (the default, a file beside the profiles; WAL journal so
  readers never block the writer);
- `postgresql://user:pass@host/db` (mapped to the psycopg 3 driver, `postgresql+psycopg://`).

Times are stored and compared in UTC. `regions` is a JSON list of `{x, y, width, height,
area, peak}`. `kept` is the path of the photo kept for audit (winclip.service.retention), null
when none is kept (or no longer: removed to stay within the disk budget). Only the service's
model worker writes rows (one transaction per batch); `profile_revisions` is written by
winclip.service.revisions. The schema is versioned with Alembic (winclip.service.migrate):
opening a database upgrades it to the schema below.

Records that survive: the SQLite file's identity (device, inode) is taken at start and checked
before and after every write and by `check` (readiness): a file deleted or replaced while
serving makes every later write and read fail (`DatabaseUnavailableError`) instead of
writing into an unlinked file. SQLite waits `busy_timeout_ms` for a lock; PostgreSQL gives up
connecting after `connect_timeout_s`. A failed write is remembered (`last_error`) until a
write or a readiness probe succeeds. CSV cells that start like a formula are prefixed with
`'` (winclip.spreadsheet).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from ..spreadsheet import safe_cell
from .config import ServiceConfig
from .migrate import SchemaError, upgrade

if TYPE_CHECKING:
    from ..inspection.inspector import Inspection

metadata = sa.MetaData()
KEPT_CHARS = 1024  # the longest path of a kept photo

inspections = sa.Table(
    "inspections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("profile", sa.String(64), nullable=False, index=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("image_sha256", sa.String(64), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("label", sa.String(16), nullable=False, index=True),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("regions", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("kept", sa.String(KEPT_CHARS), nullable=True),
)

profile_revisions = sa.Table(
    "profile_revisions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
)

COLUMNS = tuple(c.name for c in inspections.columns)
MAX_PAGE = 1000
MAX_OFFSET = 2**63 - 1  # the largest OFFSET both databases take (a signed 64-bit integer)
PROBE_BUSY_MS = 100  # how long the readiness probe waits for SQLite's write lock
T = TypeVar("T")


class DatabaseUnavailableError(RuntimeError):
    """The record cannot be written or read now: file gone or replaced, locked, or unreachable (HTTP 503)."""


class Record(BaseModel, frozen=True):
    """One inspected image as stored (without the id the database assigns)."""

    time: datetime
    profile: str
    filename: str
    image_sha256: str
    score: float
    threshold: float
    label: str
    confidence: float
    regions: list[dict]
    latency_ms: float
    kept: str | None = None

    @classmethod
    def of(cls, now: datetime, profile: str, upload: tuple[str, str, float], r: Inspection) -> Record:
        """The row of one decided inspection of an upload (file name, sha256, time.perf_counter when received)."""
        assert r.score is not None and r.threshold is not None and r.label is not None and r.confidence is not None
        filename, sha256, received = upload
        return cls(
            time=now,
            profile=profile,
            filename=filename,
            image_sha256=sha256,
            score=float(r.score),
            threshold=float(r.threshold),
            label=r.label,
            confidence=float(r.confidence),
            regions=[g.as_dict() for g in r.regions],
            latency_ms=(time.perf_counter() - received) * 1000.0,
        )


@dataclass(frozen=True)
class Filters:
    """Which rows a query returns: exact profile and label, `since <= time < until` (UTC)."""

    profile: str | None = None
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def database_url(url: str) -> str:
    """`postgresql://` and `postgres://` → the psycopg 3 driver; anything else unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def utc(t: datetime) -> datetime:
    """An aware UTC datetime; naive ones are taken to be UTC already."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _where(query: sa.Select, f: Filters) -> sa.Select:
    if f.profile is not None:
        query = query.where(inspections.c.profile == f.profile)
    if f.label is not None:
        query = query.where(inspections.c.label == f.label)
    if f.since is not None:
        query = query.where(inspections.c.time >= utc(f.since))
    if f.until is not None:
        query = query.where(inspections.c.time < utc(f.until))
    return query


def _row(row: sa.Row) -> dict:
    out = dict(row._mapping)
    out["time"] = utc(out["time"]).isoformat()
    return out


class Recorder:
    """Writes and pages through inspection records in one database (module docstring)."""

    @classmethod
    def of(cls, config: ServiceConfig) -> Recorder:
        """The record a `ServiceConfig` names, with its timeouts."""
        return cls(
            config.database, connect_timeout_s=config.db_connect_timeout_s, busy_timeout_ms=config.db_busy_timeout_ms
        )

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0, busy_timeout_ms: int = 5000) -> None:
        self.url = database_url(url)
        self.busy_timeout_ms = int(busy_timeout_ms)
        connect_args = {}
        if self.url.startswith("postgresql"):
            connect_args["connect_timeout"] = max(1, round(connect_timeout_s))  # libpq takes whole seconds
        self.engine: Engine = sa.create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        self.path: str | None = None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", self._sqlite_pragmas)
            database = self.engine.url.database
            self.path = os.path.abspath(database) if database and database != ":memory:" else None
        self.schema_change = upgrade(self.engine)  # SchemaError when it cannot
        self._identity = self._file_identity()
        self.last_error: str | None = None

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_dev, info.st_ino

    def check_file(self) -> None:
        """DatabaseUnavailableError when the SQLite file was deleted or replaced since the start."""
        if self.path is None:
            return
        now = self._file_identity()
        if now != self._identity:
            what = "deleted" if now is None else "replaced"
            raise DatabaseUnavailableError(
                f"the database file {self.path} was {what} while serving; records cannot be written; restart the "
                "service (a new file is made) or restore the file"
            )

    def record(self, records: Sequence[Record]) -> list[int]:
        """Insert rows in one transaction and return their ids in order; DatabaseUnavailableError when they may
        not be in the database file."""
        if not records:
            return []
        rows = [{**r.model_dump(), "time": utc(r.time)} for r in records]
        insert = inspections.insert().returning(inspections.c.id, sort_by_parameter_order=True)
        ids = self._write(lambda conn: [row.id for row in conn.execute(insert, rows)])
        if len(ids) != len(rows):
            raise DatabaseUnavailableError(f"{len(rows)} rows inserted but {len(ids)} ids returned")
        return ids

    def set_kept(self, kept: dict[int, str | None]) -> None:
        """Point rows (by id) at their kept photo, or at none (None)."""
        if kept:
            update = inspections.update().where(inspections.c.id == sa.bindparam("row_id"))
            params = [{"row_id": i, "kept_path": path} for i, path in kept.items()]
            self._write(lambda conn: conn.execute(update.values(kept=sa.bindparam("kept_path")), params))

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """`work(conn)` in one transaction, the file checked before and after (module docstring)."""
        try:
            self.check_file()
            with self.engine.begin() as conn:
                out = work(conn)
            self.check_file()  # deleted during the write: the rows went into an unlinked file
        except (DatabaseUnavailableError, sa.exc.SQLAlchemyError) as exc:
            self.last_error = one_line(exc)
            raise DatabaseUnavailableError(self.last_error) from None
        self.last_error = None
        return out

    def check(self) -> None:
        """Readiness: the file is the one opened and the table reads; after a failed write, also that a write
        lock can be had now (SQLite; PostgreSQL's read suffices), which clears the failure."""
        try:
            self.check_file()
            with self.engine.connect() as conn:
                conn.execute(sa.select(inspections.c.id).limit(1)).all()
                if self.last_error is not None and self.dialect == "sqlite":
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={PROBE_BUSY_MS}")
                    try:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                        conn.exec_driver_sql("ROLLBACK")
                    finally:
                        conn.exec_driver_sql(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        except (DatabaseUnavailableError, sa.exc.SQLAlchemyError) as exc:
            raise DatabaseUnavailableError(one_line(exc)) from None
        self.last_error = None

    def count(self, filters: Filters | None = None) -> int:
        """Number of rows matching the filters."""
        filters = filters or Filters()
        self.check_file()
        with self.engine.connect() as conn:
            return int(conn.execute(_where(sa.select(sa.func.count()).select_from(inspections), filters)).scalar_one())

    def page(self, filters: Filters | None = None, *, limit: int = 100, offset: int = 0) -> list[dict]:
        """Matching rows, newest first (then by id, descending)."""
        filters = filters or Filters()
        query = _where(sa.select(inspections), filters)
        query = query.order_by(inspections.c.time.desc(), inspections.c.id.desc()).limit(limit).offset(offset)
        self.check_file()
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def iter_csv(self, filters: Filters | None = None, *, chunk: int = 1000) -> Iterator[str]:
        """CSV text of every matching row (header first, oldest first), a chunk of rows at a time."""
        filters = filters or Filters()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        query = _where(sa.select(inspections), filters).order_by(inspections.c.time, inspections.c.id)
        self.check_file()
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(query)
            for part in result.partitions(chunk):
                for row in part:
                    r = _row(row)
                    writer.writerow([safe_cell(json_cell(r[c]) if c == "regions" else r[c]) for c in COLUMNS])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def _sqlite_pragmas(self, dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        cursor.close()


def json_cell(value: object) -> str:
    """A compact JSON cell for CSV."""
    return json.dumps(value, separators=(",", ":"))


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (driver errors span many lines); winclip's own errors as they are."""
    if isinstance(exc, (DatabaseUnavailableError, SchemaError)):
        return str(exc)
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
