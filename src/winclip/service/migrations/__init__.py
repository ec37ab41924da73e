"""Alembic's scripts for the record's schema (run by winclip.service.migrate; `versions/`: one file per revision)."""
