"""Spaces beside the one a collection serves: what a migrate job builds, and what a
migration leaves for a rollback (index/spaces.py).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KEY = 1100  # "model\naudio model": two ids of at most 512 characters


def upgrade() -> None:
    """Create spaces, space_vectors and space_aligners (empty)."""
    op.create_table(
        "spaces",
        sa.Column(
            "collection_id",
            sa.BigInteger,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(KEY), primary_key=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("audio_model", sa.String(512), nullable=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("index_type", sa.String(32), nullable=True),
        sa.Column("index_params", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "space_vectors",
        sa.Column(
            "item_pk",
            sa.BigInteger,
            sa.ForeignKey("items.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(KEY), primary_key=True),
        sa.Column("collection_id", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("feature", sa.LargeBinary, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("spans", sa.JSON, nullable=True),
        sa.Column("aligner_version", sa.Integer, nullable=False),
    )
    op.create_index("ix_space_vectors_space", "space_vectors", ["collection_id", "key"])
    op.create_table(
        "space_aligners",
        sa.Column(
            "collection_id",
            sa.BigInteger,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(KEY), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("artefact", sa.LargeBinary, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop what upgrade created."""
    op.drop_table("space_aligners")
    op.drop_index("ix_space_vectors_space", table_name="space_vectors")
    op.drop_table("space_vectors")
    op.drop_table("spaces")
