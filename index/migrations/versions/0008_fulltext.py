"""The full-text index of items (lexical and hybrid search): derived from the items' rows,
kept in step by the database itself in the transaction that writes an item.

- SQLite: an FTS5 table ``items_fts`` (rowid = the item's key; columns ``text`` and ``meta``,
  the metadata's string and number values, and ``coll``, the token ``c<collection id>``
  a search matches first, so it reads and counts one collection's items only), filled by
  triggers on ``items``.
- Postgres: a generated column ``items.fulltext`` (``mmr_fulltext(text, metadata)``, a
  tsvector the database computes from the row) with a GIN index: nothing to keep in step
  at all. Stored rather than an index on the expression: ranking reads it instead of
  computing every matching item's tsvector again (275 ms against a few for 2,000 items).

Both are rebuilt from the items here (and by ``index.fulltext.rebuild``).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The metadata's string and number values, space separated (booleans, nulls and keys are
# not words anyone searches for).
SQLITE_META = (
    "(SELECT group_concat(value, ' ') FROM json_tree({row}.metadata) "
    "WHERE type IN ('text', 'integer', 'real'))"
)
SQLITE_ADD = (
    "INSERT INTO items_fts (rowid, text, meta, coll) "
    "VALUES (new.pk, new.text, {meta}, 'c' || new.collection_id);"
)
SQLITE_DROP = "DELETE FROM items_fts WHERE rowid = old.pk;"

# 22P05: a \u0000 escape, 22P02: a lone surrogate (both valid JSON text, neither text in
# Postgres): such metadata leaves only the item's text searchable, and the write goes on.
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION mmr_fulltext(body text, meta json) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN to_tsvector('simple'::regconfig, coalesce(body, ''))
        || json_to_tsvector('simple'::regconfig, meta, '["string", "numeric"]'::jsonb);
EXCEPTION WHEN untranslatable_character OR invalid_text_representation THEN
    RETURN to_tsvector('simple'::regconfig, coalesce(body, ''));
END
$$
"""


def upgrade() -> None:
    """Create the index and fill it from the items stored."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(
            "ALTER TABLE items ADD COLUMN fulltext tsvector "
            "GENERATED ALWAYS AS (mmr_fulltext(text, metadata)) STORED"
        )
        op.execute("CREATE INDEX ix_items_fulltext ON items USING gin (fulltext)")
        return
    # unicode61 without diacritics ("café" finds "cafe"); letters and digits make tokens,
    # everything else separates them, so "XJ-9000" is the phrase "xj 9000".
    op.execute(
        "CREATE VIRTUAL TABLE items_fts USING fts5"
        "(text, meta, coll, tokenize = 'unicode61 remove_diacritics 2')"
    )
    new_meta = SQLITE_META.format(row="new")
    op.execute(
        "CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN "
        f"{SQLITE_ADD.format(meta=new_meta)} END"
    )
    op.execute(f"CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN {SQLITE_DROP} END")
    op.execute(
        "CREATE TRIGGER items_fts_update AFTER UPDATE OF text, metadata ON items BEGIN "
        f"{SQLITE_DROP} {SQLITE_ADD.format(meta=new_meta)} END"
    )
    op.execute(
        "INSERT INTO items_fts (rowid, text, meta, coll) "
        f"SELECT pk, text, {SQLITE_META.format(row='items')}, 'c' || collection_id FROM items"
    )


def downgrade() -> None:
    """Drop the index (lexical search then finds nothing to search)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_fulltext")
        op.execute("ALTER TABLE items DROP COLUMN IF EXISTS fulltext")
        op.execute("DROP FUNCTION IF EXISTS mmr_fulltext(text, json)")
        return
    for trigger in ("items_fts_insert", "items_fts_delete", "items_fts_update"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS items_fts")
