"""Duplicates listings a job stored (``GET .../duplicates`` of a collection too large to
list within a request answers from the newest one that covers it).

- ``duplicate_listings``: one row per job that finished, its pairs as arrays in one blob,
  the collection's change-log head it reflects; deleted with its collection (the foreign
  key, and explicitly by ``CollectionStore.delete``).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create duplicate_listings."""
    op.create_table(
        "duplicate_listings",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column(
            "collection_id",
            sa.BigInteger,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("change_seq", sa.BigInteger, nullable=False),
        sa.Column("aligner_version", sa.Integer, nullable=False),
        sa.Column("index_epoch", sa.Integer, nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("pairs", sa.LargeBinary, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_duplicate_listings_collection", "duplicate_listings", ["collection_id", "modality"]
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_duplicate_listings_collection", table_name="duplicate_listings")
    op.drop_table("duplicate_listings")
