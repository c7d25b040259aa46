"""Engine and sessions: SQLite in WAL mode by default, Postgres by URL; migrations at start."""

from __future__ import annotations

import contextlib
import fcntl
import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# How often (in SQLite virtual machine steps) a running statement checks its deadline:
# about a tenth of a millisecond of work, a Python call each time.
SQLITE_CHECK_STEPS = 10_000
_PG_QUERY_CANCELED = "57014"


def make_engine(url: str, *, statement_timeout_s: float = 0.0) -> Engine:
    """An engine for the URL; SQLite gets WAL, full fsync and foreign keys on every connection.

    With ``statement_timeout_s``, every statement is stopped once it has run that long
    (Postgres: ``statement_timeout``; SQLite: a progress handler), raising an error that
    ``statement_timed_out`` recognises: one expensive query cannot hold a connection and a
    core for minutes. Migrations and ``no_time_limit`` blocks run without it.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        if statement_timeout_s > 0:
            _limit_sqlite(engine, statement_timeout_s)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if statement_timeout_s > 0:
        _limit_postgres(engine, statement_timeout_s)
    return engine


class _Deadline:
    """When the statement running on one SQLite connection must stop (inf: never)."""

    def __init__(self) -> None:
        self.at = math.inf
        self.suspended = 0

    def exceeded(self) -> bool:
        return not self.suspended and time.monotonic() > self.at


def _limit_sqlite(engine: Engine, limit_s: float) -> None:
    def attach(dbapi_conn: Any, record: Any) -> None:
        deadline = record.info["deadline"] = _Deadline()
        dbapi_conn.set_progress_handler(deadline.exceeded, SQLITE_CHECK_STEPS)

    def start(conn: Connection, *_: Any) -> None:
        conn.info["deadline"].at = time.monotonic() + limit_s

    def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        # Statements run on a raw connection (search hydration) skip the cursor events:
        # they are timed from the checkout instead.
        record.info["deadline"].at = time.monotonic() + limit_s

    def checkin(_dbapi: Any, record: Any) -> None:
        if "deadline" in record.info:
            record.info["deadline"].at = math.inf

    event.listen(engine, "connect", attach)
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    event.listen(engine, "before_cursor_execute", start)


def _limit_postgres(engine: Engine, limit_s: float) -> None:
    millis = max(1, round(limit_s * 1000))

    def attach(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {millis}")
        dbapi_conn.commit()  # a session setting: it outlives this transaction

    event.listen(engine, "connect", attach)


@contextlib.contextmanager
def no_time_limit(conn: Connection) -> Iterator[None]:
    """Statements on ``conn`` inside the block run without the engine's time limit (work
    that grows with the data, not with a request: migrations, deleting a collection).
    On Postgres it lasts until the transaction ends, so begin one first."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        yield
        return
    deadline = conn.info.get("deadline")
    if deadline is None:
        yield
        return
    deadline.suspended += 1
    try:
        yield
    finally:
        deadline.suspended -= 1


def statement_timed_out(exc: BaseException) -> bool:
    """Whether an error (SQLAlchemy's or a driver's own) is a statement stopped by the time
    limit: SQLite's "interrupted" (nothing else here interrupts), Postgres's 57014."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig) == "interrupted"
    return getattr(orig, "sqlstate", None) == _PG_QUERY_CANCELED


MMAP_BYTES = 1 << 31
# How long a statement waits for another connection's write lock on the SQLite file before
# SQLite says "database is locked" (answered 503 ``database_busy``, app/errors.py).
SQLITE_BUSY_TIMEOUT_MS = 30_000


@contextlib.contextmanager
def unmapped(conn: Connection) -> Iterator[None]:
    """Reads on ``conn`` inside the block bypass SQLite's memory map (``MMAP_BYTES``), and
    the pages the connection had mapped are dropped: a scan of a whole collection (an index
    build) would otherwise leave every page it read resident in this process, counted in its
    RSS for as long as the pooled connection lives (up to 2 GiB). Nothing on Postgres."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA mmap_size=0")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA mmap_size={MMAP_BYTES}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a 2xx means the commit reached the disk, not only the OS cache.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
    # Reads through a memory map instead of a read() per page (SQLite caps it at 2 GiB):
    # a search's 10 hits walk ~30 pages, blobs' overflow pages included; the plain query
    # took 0.10-0.12 ms instead of 0.14-0.17 on a 2-core VM. Writes still go through the WAL.
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose rows stay readable after commit (they leave the session as values)."""
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine a store's sessions are bound to (for what runs on the driver itself)."""
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine), "the store's sessions are bound to one engine"
    return bind


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to an Alembic revision (the newest by default)."""
    _alembic(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to an older revision (what an older release expects)."""
    _alembic(engine, command.downgrade, revision)


# pg_advisory_xact_lock's key for migrations: any constant the service uses for nothing else.
MIGRATION_LOCK = 0x6D6D72  # "mmr"


def _alembic(engine: Engine, step: Any, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _one_migrator(engine), engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # SQLite alters a table by copying it and dropping the original; with foreign keys
            # on, dropping `collections` would cascade into `items`. The pragma is a no-op
            # inside a transaction, and sqlite3 opens none for a PRAGMA: it goes first.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()  # ends SQLAlchemy's autobegun (empty) transaction
        try:
            with conn.begin(), no_time_limit(conn):
                if not sqlite:  # held to the commit: the next process finds the schema current
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                cfg.attributes["connection"] = conn
                step(cfg, revision)
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


@contextlib.contextmanager
def _one_migrator(engine: Engine) -> Iterator[None]:
    """One process migrates a SQLite database at a time (several starting at once, as
    ``mmr serve --workers`` does, otherwise race to create the same tables): an exclusive
    lock on a file beside the database. Postgres takes an advisory lock in the migration's
    transaction instead (``_alembic``)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def ping(engine: Engine) -> bool:
    """True when the database answers."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except (SQLAlchemyError, OSError):
        return False
