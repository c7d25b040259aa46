"""Initial schema: collections, items, item tags, change log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the v1 tables."""
    op.create_table(
        "collections",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("aligner_version", sa.Integer, nullable=False),
        sa.Column("index_type", sa.String(32), nullable=False),
        sa.Column("index_params", sa.JSON, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "items",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "collection_id",
            sa.BigInteger,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("feature", sa.LargeBinary, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("aligner_version", sa.Integer, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.UniqueConstraint("collection_id", "external_id", name="uq_items_collection_external"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_items_collection_id", "items", ["collection_id"])
    op.create_index("ix_items_sha256", "items", ["sha256"])
    op.create_table(
        "item_tags",
        sa.Column(
            "item_pk",
            sa.BigInteger,
            sa.ForeignKey("items.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.String(1024), primary_key=True),
        sa.Column("collection_id", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_item_tags_lookup", "item_tags", ["collection_id", "key", "value"])
    op.create_table(
        "changes",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.BigInteger, nullable=False),
        sa.Column("item_pk", sa.BigInteger, nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_changes_collection_seq", "changes", ["collection_id", "seq"])


def downgrade() -> None:
    """Drop the v1 tables."""
    for table in ("changes", "item_tags", "items", "collections"):
        op.drop_table(table)
