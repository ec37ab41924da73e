"""The record's schema, versioned with Alembic. The migrations ship inside the package (`migrations/`)
and run programmatically whenever a database is opened (`upgrade`): no alembic.ini, nothing to run.

- An empty database gets the whole schema.
- A database made before the schema was versioned (winclip's `metadata.create_all`: a table
  `inspections` and no `alembic_version`) is taken to be revision `BASELINE` once its columns are
  checked, then upgraded; its rows are kept.
- A database at an older revision is upgraded. One at a revision this winclip does not know (a
  newer winclip upgraded it), or with an `inspections` table that winclip did not make, is
  refused (SchemaError, one line saying what to do).

Concurrent starts (replicas) take turns: PostgreSQL holds a transaction-level advisory lock,
SQLite its write lock (`BEGIN IMMEDIATE`). DDL is transactional on both, so an upgrade is
applied whole or not at all, and the replica that waited finds the database upgraded.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

SCRIPTS = Path(__file__).resolve().with_name("migrations")
BASELINE = "0001"  # the schema of winclip before Alembic
BASELINE_COLUMNS = frozenset(
    ("id", "time", "profile", "filename", "image_sha256", "score", "threshold", "label", "confidence", "regions")
    + ("latency_ms",)
)
ADVISORY_LOCK = 0x77696E636C6970  # "winclip": the PostgreSQL advisory lock key of every winclip migration


class SchemaError(RuntimeError):
    """The database's schema cannot be brought to this winclip's (one line: why, and what to do)."""


def config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the packaged scripts, and the connection to migrate."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this winclip knows."""
    current = ScriptDirectory.from_config(config()).get_current_head()
    if current is None:
        raise SchemaError(f"{SCRIPTS}: no schema migrations in this winclip installation")
    return current


def revision(engine: sa.Engine) -> str | None:
    """The database's revision (None: not versioned)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> str | None:
    """Bring the database to `head()` (module docstring); what was done, in one line, or None if nothing was."""
    scripts = ScriptDirectory.from_config(config())
    target = scripts.get_current_head()
    with engine.connect() as conn:
        _lock(conn)
        current = MigrationContext.configure(conn).get_current_revision()
        start = current or "an empty database"
        if current is None and sa.inspect(conn).has_table("inspections"):
            _check_baseline(conn)
            command.stamp(config(conn), BASELINE)
            current, start = BASELINE, f"the unversioned schema (taken as {BASELINE})"
        if current is not None:
            try:
                scripts.get_revision(current)
            except CommandError:
                raise SchemaError(
                    f"the record's schema is at revision {current!r}, which this winclip does not know (a newer "
                    f"winclip upgraded it; this one knows up to {target!r}): run the newer winclip, or point --db at "
                    "another database"
                ) from None
        if current == target:
            conn.commit()
            return None
        command.upgrade(config(conn), "head")
        conn.commit()
    return f"the record's schema was upgraded from {start} to revision {target}"


def _lock(conn: sa.Connection) -> None:
    """Take the database-wide migration lock until the transaction ends (module docstring)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _check_baseline(conn: sa.Connection) -> None:
    """SchemaError unless the unversioned `inspections` table has exactly the columns winclip made."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns("inspections")}
    if columns != BASELINE_COLUMNS:
        odd = sorted(columns ^ BASELINE_COLUMNS)
        raise SchemaError(
            f"the database has an 'inspections' table that winclip did not make (columns differ: {', '.join(odd)}); "
            "point --db at another database, or rename that table"
        )
