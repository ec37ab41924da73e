"""Profile revisions in the database: how replicas that share one profiles folder agree on each profile.

The table `profile_revisions` holds, per profile name, a revision number (1, 2, ...) and the
digest of the content saved at that revision (`Profile.digest`). Every change to a profile
through any replica (creation, new thresholds) happens inside `locked(name)`: the row is
write-locked (PostgreSQL `SELECT ... FOR UPDATE` after an `INSERT ... ON CONFLICT DO NOTHING`
that makes sure there is a row to lock; SQLite `BEGIN IMMEDIATE`), the profile is read from the
folder when this replica's copy is not the stored revision, changed, saved to the folder, and
the revision is incremented with the new digest in the same transaction. So changes of one
profile are applied one after the other, each on top of the one before (no lost update), and
a reader that sees revision N in the table finds its files complete in the folder (they were
saved before N was committed).

Replicas poll `current()` (winclip.service.sync) and reload a profile whose revision moved on.
A replica checks what it reads against the digest: a folder caught between two saves is read
again at the next poll.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .db import Recorder, profile_revisions

UNREGISTERED = 0  # the revision of a row made only to be locked (never committed as such)


@dataclass(frozen=True)
class Revision:
    """One profile's stored revision and the digest of its content."""

    revision: int
    digest: str


class Locked:
    """The row of one profile, write-locked until the `Revisions.locked` block ends."""

    def __init__(self, conn: sa.Connection, name: str, row: Revision | None) -> None:
        self._conn = conn
        self.name = name
        self.stored = row  # None: the profile has no revision yet
        self.written: Revision | None = None

    @property
    def revision(self) -> int:
        """The stored revision (0 when none)."""
        return UNREGISTERED if self.stored is None else self.stored.revision

    def write(self, digest: str) -> Revision:
        """Store the next revision with this digest (committed when the block ends without an error)."""
        new = Revision(self.revision + 1, digest)
        self._conn.execute(
            profile_revisions.update()
            .where(profile_revisions.c.name == self.name)
            .values(revision=new.revision, digest=digest, updated=datetime.now(timezone.utc))
        )
        self.written = new
        return new


class Revisions:
    """The revision table of one database (module docstring)."""

    def __init__(self, recorder: Recorder) -> None:
        self.engine = recorder.engine
        self.lock_timeout_ms = recorder.busy_timeout_ms

    def current(self) -> dict[str, Revision]:
        """Every registered profile's revision."""
        query = sa.select(profile_revisions).where(profile_revisions.c.revision > UNREGISTERED)
        with self.engine.connect() as conn:
            return {r.name: Revision(r.revision, r.digest) for r in conn.execute(query)}

    @contextmanager
    def locked(self, name: str) -> Iterator[Locked]:
        """The row of `name`, write-locked for the block; committed when the block ends without an error and
        wrote a revision, else rolled back. Waits at most the lock timeout for another replica's change."""
        with self.engine.connect() as conn:
            dialect = conn.dialect.name
            if dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # waits up to the busy timeout set on connect
            elif dialect == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
            insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(profile_revisions)
            placeholder = {"name": name, "revision": UNREGISTERED, "digest": "", "updated": datetime.now(timezone.utc)}
            conn.execute(insert.values(**placeholder).on_conflict_do_nothing(index_elements=["name"]))
            query = sa.select(profile_revisions).where(profile_revisions.c.name == name).with_for_update()
            row = conn.execute(query).one()
            stored = Revision(row.revision, row.digest) if row.revision > UNREGISTERED else None
            locked = Locked(conn, name, stored)
            try:
                yield locked
            except BaseException:
                conn.rollback()
                raise
            if locked.written is None:
                conn.rollback()
            else:
                conn.commit()
