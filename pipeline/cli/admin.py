"""Set-up commands: ``migrate`` and ``topics``."""

from __future__ import annotations

import asyncio

import click

from pipeline import database, topics
from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.errors import DatabaseUnavailable, SwitchboardError


@cli.command()
@click.option("--revision", default="head", show_default=True, help="Alembic target revision.")
@click.pass_context
def migrate(ctx: click.Context, revision: str) -> None:
    """Apply the Alembic migrations (``upgrade head``); a second run changes nothing."""
    settings = settings_from(ctx)
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        database.check_database(engine)
    finally:
        engine.dispose()
    try:
        database.migrate(settings, revision)
    except Exception as exc:
        if database.is_transient(exc):
            raise DatabaseUnavailable(f"MySQL unreachable: {exc.__class__.__name__}") from exc
        # A permission error, a broken revision...: one line, no traceback, no URL.
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
        raise SwitchboardError(f"migration failed: {exc.__class__.__name__}: {reason}") from exc
    click.echo(f"database migrated to {revision}")


@cli.command("topics")
@click.pass_context
def topics_command(ctx: click.Context) -> None:
    """Create the Kafka topics of docs/architecture.md, or validate them if they exist (idempotent)."""
    settings = settings_from(ctx)
    with quiet_kafka():
        reports = asyncio.run(topics.ensure_topics(settings))
    bad = False
    for report in reports:
        line = f"{report.name:40} {report.action:9} partitions={report.partitions}"
        if report.detail:
            line += f"  ({report.detail})"
        click.echo(line)
        bad = bad or report.action == "mismatch"
    if bad:
        raise SwitchboardError("some topics disagree with the configured partition count")
