"""Engine creation and schema migration for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from vpp_aggregator.config import SqliteSynchronous

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(database_url: str, sqlite_synchronous: SqliteSynchronous = "normal") -> Engine:
    allowed = get_args(SqliteSynchronous)
    if sqlite_synchronous not in allowed:  # it goes into a PRAGMA: never unchecked
        raise ValueError(f"sqlite_synchronous {sqlite_synchronous!r} is not one of {allowed}")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for the ingest writer
            # with WAL, "normal" syncs only at checkpoints; "off" never (a throwaway store)
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous.upper()}")
            cur.execute("PRAGMA cache_size=-131072")  # 128 MiB: history indexes stay in memory
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


# pg_advisory_xact_lock key for migrations: any constant all our processes agree on.
MIGRATION_LOCK_KEY = 0x5650_5041_4747  # "VPPAGG"


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns that revision.

    Replicas starting together each migrate: one at a time, under a lock held for the whole
    upgrade. The next one then finds the schema current and does nothing. On PostgreSQL the lock
    is a transaction-scoped advisory lock (DDL is transactional there); on SQLite it is an
    exclusive lock on a file beside the database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _file_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return current_revision(engine) or "none"


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """SQLite: an exclusive `flock` on `<database>.migrate.lock`; nothing for other databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return str(row[0]) if row else None


def head_revision() -> str:
    """The newest migration shipped with this version."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return str(head)
