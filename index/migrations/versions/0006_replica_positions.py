"""How far each server process follows the change log (invariant 8): pruning keeps what a
live process has not applied yet.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create replica_positions (empty: every process reports itself within seconds)."""
    op.create_table(
        "replica_positions",
        sa.Column("replica", sa.String(96), primary_key=True),
        sa.Column("collection_id", sa.BigInteger, primary_key=True),
        sa.Column("applied", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop replica_positions (pruning then waits for no other process)."""
    op.drop_table("replica_positions")
