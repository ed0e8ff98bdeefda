"""Set-up commands: ``migrate`` and ``topics`` (with ``topics delete``)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import click
from sqlalchemy import Engine

from pipeline import database, topics
from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit, emit_json, json_option
from pipeline.errors import DatabaseUnavailable, SwitchboardError
from pipeline.ops import teardown


def _revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@cli.command()
@click.option("--revision", default="head", show_default=True, help="Alembic target revision.")
@json_option
@click.pass_context
def migrate(ctx: click.Context, revision: str, as_json: bool) -> None:
    """Apply the Alembic migrations (``upgrade head``); a second run changes nothing."""
    settings = settings_from(ctx)
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        database.check_database(engine)
        before = _revision(engine)
        try:
            database.migrate(settings, revision)
        except Exception as exc:
            if database.is_transient(exc):
                raise DatabaseUnavailable(f"MySQL unreachable: {exc.__class__.__name__}") from exc
            # A permission error, a broken revision...: one line, no traceback, no URL.
            reason = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
            raise SwitchboardError(f"migration failed: {exc.__class__.__name__}: {reason}") from exc
        after = _revision(engine)
    finally:
        engine.dispose()
    if as_json:
        emit_json({"target": revision, "before": before, "after": after})
    else:
        click.echo(f"database migrated to {revision} (revision {after}, was {before})")


@cli.group("topics", invoke_without_command=True)
@json_option
@click.pass_context
def topics_command(ctx: click.Context, as_json: bool) -> None:
    """Create the Kafka topics of docs/architecture.md, or validate them if they exist (idempotent).

    `switchboard topics delete` removes this environment's topics (docs/runbook.md).
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from(ctx)
    with quiet_kafka():
        reports = asyncio.run(topics.ensure_topics(settings))
    bad = any(report.action == "mismatch" for report in reports)
    if as_json:
        emit_json({"topics": [asdict(report) for report in reports], "ok": not bad})
    else:
        for report in reports:
            line = f"{report.name:40} {report.action:9} partitions={report.partitions}"
            if report.detail:
                line += f"  ({report.detail})"
            click.echo(line)
    if bad:
        raise SwitchboardError("some topics disagree with the configured partition count")


@topics_command.command("delete")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and what stops it; delete nothing.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Really delete (the records on them are gone for good).")  # fmt: skip
@click.option("--discard-unapplied", is_flag=True, help="Delete even when webhook records were never applied.")  # fmt: skip
@json_option
@click.pass_context
def topics_delete(
    ctx: click.Context, dry_run: bool, yes: bool, discard_unapplied: bool, as_json: bool
) -> None:
    """Delete this environment's topics: the webhook topics, webhooks.dlq and the snapshot
    topic of SWITCHBOARD_TOPIC_PREFIX, and the Faust topics (table changelogs, assignor) of
    SWITCHBOARD_CONSUMER_GROUP.

    Refused while workers are in the consumer group, or while a webhook topic holds
    records the group has not applied (--discard-unapplied accepts losing them). Give
    --yes, or --dry-run to see what it would do.

    \b
    Examples:
      switchboard topics delete --dry-run
      env SWITCHBOARD_TOPIC_PREFIX= SWITCHBOARD_CONSUMER_GROUP=switchboard switchboard topics delete --yes
    """
    if not (yes or dry_run):
        raise click.UsageError("deleting topics loses their records: give --yes (or --dry-run)")
    settings = settings_from(ctx)
    with quiet_kafka():
        report = asyncio.run(
            teardown.delete_topics(settings, dry_run=dry_run, discard_unapplied=discard_unapplied)
        )
    if as_json:
        emit_json(report.as_dict())
    else:
        for line in report.lines():
            emit(line)
    if not report.ok:
        ctx.exit(1)
