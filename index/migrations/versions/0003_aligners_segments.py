"""Aligner heads as versioned artefacts, the audio model of a collection, segment spans.

- ``aligners``: one row per (collection, version): the artefact bytes (safetensors), their
  digest and the training metadata; ``collections.aligner_version`` names the active one.
  Version 0 stays the implicit identity of collections made before this revision.
- ``collections.audio_model``: the audio encoder whose features the audio head takes.
- ``items.spans``: ``[[start, end], ...]`` seconds of each stored vector of a recording;
  ``feature`` and ``vector`` then hold one row per segment.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    """Create aligners; add collections.audio_model and items.spans."""
    op.create_table(
        "aligners",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "collection_id",
            sa.BigInteger,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("artefact", sa.LargeBinary, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("collection_id", "version", name="uq_aligners_collection_version"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("audio_model", sa.String(512), nullable=True))
    # mmr-mini collections already hold audio from the model's own tower.
    op.execute("UPDATE collections SET audio_model = model WHERE model LIKE 'mmr-mini%'")
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("spans", sa.JSON, nullable=True))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("items") as batch:
        batch.drop_column("spans")
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("audio_model")
    op.drop_table("aligners")
