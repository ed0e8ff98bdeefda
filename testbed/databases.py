"""Scratch databases on the stack's MariaDB: created and migrated for one test or one bench
run, dropped afterwards. The user may create databases named ``switchboard_<anything>``."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from pipeline import database
from pipeline.settings import Secret, Settings


def server_url(settings: Settings) -> str:
    """The settings' MySQL URL without a database (to create and drop databases)."""
    url = make_url(settings.database_url.reveal())
    return url.set(database="").render_as_string(hide_password=False)


def create_scratch_database(settings: Settings, prefix: str) -> Settings:
    """A fresh, migrated ``<prefix><hex>`` database; returns settings pointing at it."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    server = create_engine(server_url(settings), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        server.dispose()
    url = make_url(settings.database_url.reveal()).set(database=name)
    scoped = settings.with_(database_url=Secret(url.render_as_string(hide_password=False)))
    try:
        database.migrate(scoped)
    except BaseException:
        drop_scratch_database(scoped, prefix)
        raise
    return scoped


def drop_scratch_database(settings: Settings, prefix: str, *, retry_for_s: float = 0.0) -> None:
    """Drop a scratch database (never any other); retried for ``retry_for_s`` because fault
    tests may be restarting MariaDB at that moment."""
    name = make_url(settings.database_url.reveal()).database
    if not (name and name.startswith(prefix)):
        raise ValueError(f"refusing to drop {name!r}: not a {prefix}* database")
    deadline = time.monotonic() + retry_for_s
    while True:
        server = create_engine(server_url(settings), isolation_level="AUTOCOMMIT")
        try:
            with server.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            return
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)
        finally:
            server.dispose()
