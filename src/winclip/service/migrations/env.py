"""Alembic's environment for winclip's record: run by winclip.service.migrate on the connection it passes
(`config.attributes["connection"]`), inside that connection's transaction (which holds the migration lock)."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("winclip's migrations run when the database is opened (winclip.service.migrate.upgrade)")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
