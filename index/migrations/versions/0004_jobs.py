"""Background jobs, and the index generation of a collection.

- ``jobs``: durable work items (fine-tune, reindex) claimed by workers with a lease; a
  partial unique index lets at most one job per collection run at a time.
- ``collections.index_epoch``: bumped by a reindex; a process whose live index was built
  for another (aligner version, epoch) rebuilds it beside the live one and swaps.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create jobs; add collections.index_epoch."""
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("collection_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("collection", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "uq_jobs_one_running_per_collection",
        "jobs",
        ["collection_id"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("index_epoch", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("index_epoch")
    op.drop_index("uq_jobs_one_running_per_collection", table_name="jobs")
    op.drop_table("jobs")
