"""The record's schema under Alembic, on SQLite and on the CI PostgreSQL (a fresh schema per test): an empty
database gets the schema of db.py, an unversioned one (winclip before Alembic) is upgraded with its rows, two
replicas upgrading at once take turns, and a newer or foreign schema is refused with one line."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from helpers import TINY
from helpers.service import both_databases, old_record
from winclip.cli import main
from winclip.service.db import Record, Recorder, database_url, inspections, metadata
from winclip.service.migrate import BASELINE, SchemaError, config, head, revision, upgrade

db_url = both_databases()


def engine_of(url: str) -> sa.Engine:
    return sa.create_engine(database_url(url))


def differences(engine: sa.Engine) -> list:
    """What Alembic's autogenerate finds between the database and db.py's tables (nothing, when in step)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def a_record(name: str) -> Record:
    return Record(
        time=datetime(2026, 11, 5, tzinfo=timezone.utc), profile="new", filename=name, image_sha256="1" * 64,
        score=0.5, threshold=0.4, label="anomalous", confidence=0.7, regions=[], latency_ms=2.0, kept="/k/x.png",
    )  # fmt: skip


def test_an_empty_database_gets_the_schema_of_db_py(db_url):
    rec = Recorder(db_url)
    try:
        assert rec.schema_change == f"the record's schema was upgraded from an empty database to revision {head()}"
        assert revision(rec.engine) == head() == "0002"
        assert differences(rec.engine) == []
        assert Recorder(db_url).schema_change is None  # at head: nothing to do
        assert rec.record([a_record("n.png")]) == [1]
    finally:
        rec.close()


def test_an_unversioned_database_is_upgraded_with_its_rows(db_url):
    old_record(db_url, rows=4)
    assert revision(engine_of(db_url)) is None
    rec = Recorder(db_url)
    try:
        assert "upgraded from the unversioned schema (taken as 0001) to revision 0002" in rec.schema_change
        assert differences(rec.engine) == []
        with rec.engine.connect() as conn:
            rows = conn.execute(sa.select(inspections).order_by(inspections.c.id)).all()
        assert [(r.filename, r.kept) for r in rows] == [(f"old{i}.png", None) for i in range(4)]
        ids = rec.record([a_record("new.png")])
        assert ids == [5]
        rec.set_kept({5: None, 1: "/kept/old0.png"})
        with rec.engine.connect() as conn:
            kept = dict(conn.execute(sa.select(inspections.c.id, inspections.c.kept)).all())
        assert kept == {1: "/kept/old0.png", 2: None, 3: None, 4: None, 5: None}
    finally:
        rec.close()


def test_replicas_upgrading_at_once_take_turns(db_url):
    old_record(db_url, rows=2)
    engines = [engine_of(db_url) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        changes = list(pool.map(upgrade, engines))
    assert sum(c is not None for c in changes) == 1  # one upgraded; the others found it done
    assert revision(engines[0]) == head() and differences(engines[0]) == []
    for e in engines:
        e.dispose()


def test_migrations_go_down_and_up_again(db_url):
    engine = engine_of(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(config(conn), BASELINE)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("inspections")}
        assert "kept" not in columns and not sa.inspect(conn).has_table("profile_revisions")
    assert revision(engine) == BASELINE
    assert upgrade(engine) == f"the record's schema was upgraded from {BASELINE} to revision {head()}"
    assert differences(engine) == []
    engine.dispose()


def test_a_newer_or_foreign_schema_is_refused_in_one_line(db_url, tmp_path, capsys):
    engine = engine_of(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(SchemaError) as caught:
        Recorder(db_url)
    assert "revision '0099', which this winclip does not know" in str(caught.value)
    assert "\n" not in str(caught.value)
    code = main(
        ["serve", "--profiles", str(tmp_path / "p"), "--db", db_url, "--backbone", TINY, "--pretrained", "none"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--db: cannot open the database: the record's schema is at revision '0099'" in err, err
    assert "Traceback" not in err
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.exec_driver_sql("DROP TABLE profile_revisions")
    with pytest.raises(SchemaError, match="an 'inspections' table that winclip did not make .columns differ: kept"):
        Recorder(db_url)
    engine.dispose()
