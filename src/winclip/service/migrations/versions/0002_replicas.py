"""Replicas and retention: profile revisions shared by every replica; `inspections.kept`, the path of a photo
kept for audit.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inspections", sa.Column("kept", sa.String(1024), nullable=True))
    op.create_table(
        "profile_revisions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("profile_revisions")
    with op.batch_alter_table("inspections") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("kept")
