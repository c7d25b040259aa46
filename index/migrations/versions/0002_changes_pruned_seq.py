"""Collections remember up to which sequence their change log was pruned.

A snapshot older than that can no longer be replayed to the present and is rebuilt instead.

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
    """Add collections.changes_pruned_seq (0: nothing pruned)."""
    with op.batch_alter_table("collections") as batch:
        batch.add_column(
            sa.Column("changes_pruned_seq", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Drop collections.changes_pruned_seq."""
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("changes_pruned_seq")
