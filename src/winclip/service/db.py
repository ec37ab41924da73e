"""The inspection record: one row per predicted image, in SQLite or PostgreSQL (SQLAlchemy 2 Core).

One schema and one code path for both databases; only the URL differs:

- `sqlite:///path/inspections.sqlite` (the default, a file beside the profiles; WAL journal so
  readers never block the writer);
- `postgresql://user:pass@host/db` (mapped to the psycopg 3 driver, `postgresql+psycopg://`).

Times are stored and compared in UTC. `regions` is a JSON list of `{x, y, width, height,
area, peak}`. Only the service's model worker writes (one transaction per batch).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

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
)

COLUMNS = tuple(c.name for c in inspections.columns)
MAX_PAGE = 1000


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
    """Writes and pages through inspection records in one database."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.engine: Engine = sa.create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    def record(self, records: Sequence[Record]) -> None:
        """Insert rows in one transaction."""
        if not records:
            return
        rows = [{**r.model_dump(), "time": utc(r.time)} for r in records]
        with self.engine.begin() as conn:
            conn.execute(inspections.insert(), rows)

    def count(self, filters: Filters | None = None) -> int:
        """Number of rows matching the filters."""
        filters = filters or Filters()
        with self.engine.connect() as conn:
            return int(conn.execute(_where(sa.select(sa.func.count()).select_from(inspections), filters)).scalar_one())

    def page(self, filters: Filters | None = None, *, limit: int = 100, offset: int = 0) -> list[dict]:
        """Matching rows, newest first (then by id, descending)."""
        filters = filters or Filters()
        query = _where(sa.select(inspections), filters)
        query = query.order_by(inspections.c.time.desc(), inspections.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def iter_csv(self, filters: Filters | None = None, *, chunk: int = 1000) -> Iterator[str]:
        """CSV text of every matching row (header first, oldest first), a chunk of rows at a time."""
        filters = filters or Filters()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        query = _where(sa.select(inspections), filters).order_by(inspections.c.time, inspections.c.id)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(query)
            for part in result.partitions(chunk):
                for row in part:
                    r = _row(row)
                    writer.writerow([json_cell(r[c]) if c == "regions" else r[c] for c in COLUMNS])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def json_cell(value: object) -> str:
    """A compact JSON cell for CSV."""
    return json.dumps(value, separators=(",", ":"))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
