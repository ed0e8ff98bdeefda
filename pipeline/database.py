"""Database plumbing: engines, migrations, and the line between transient and permanent.

pymysql blocks, so async callers run database work in a thread (``asyncio.to_thread``);
the event loop that serves Kafka heartbeats and HTTP never waits on MySQL.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.errors import DatabaseUnavailable
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# MySQL/MariaDB error numbers that mean "try again": the event is fine, the moment is not.
TRANSIENT_ERRNOS = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1062,  # duplicate key: a concurrent writer (replay, redrive) won a race; re-read
        1205,  # lock wait timeout
        1213,  # deadlock
        1927,  # connection killed (MariaDB)
        2002,  # can't connect through socket
        2003,  # can't connect to server
        2006,  # server has gone away
        2013,  # lost connection during query
        2014,  # commands out of sync (a connection broken mid-query)
        2055,  # lost connection (pymysql)
        4031,  # disconnected by the server for inactivity (MariaDB)
    }
)


def create_db_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    """An engine with READ COMMITTED (no gap locks, fewer deadlocks) and pre-ping."""
    return create_engine(
        settings.database_url.reveal(),
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30},
    )


def errno_of(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None) or getattr(exc, "args", None)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later can succeed."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    errno = errno_of(exc)
    if errno in TRANSIENT_ERRNOS:
        return True
    return isinstance(exc, OperationalError) and errno is None


def check_database(engine: Engine) -> None:
    """Raise DatabaseUnavailable with a one-line reason when MySQL cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"MySQL unreachable: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    return " ".join(str(orig).split())[:200]


def alembic_config(settings: Settings) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", settings.database_url.reveal().replace("%", "%%"))
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """Alembic ``upgrade`` to ``revision``; running it twice is a no-op."""
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings), revision)
