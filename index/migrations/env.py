"""Alembic environment: runs on the connection the service hands it (see index/db.py)."""

from alembic import context
from sqlalchemy import text

from index.tables import Base

# API and worker may start together: one migrates, the other waits on this lock.
MIGRATION_LOCK_ID = 7_466_730_001


def run_migrations_online() -> None:
    """Run migrations on the connection passed in config.attributes."""
    connection = context.config.attributes["connection"]
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
