"""Data that does not grow forever and is erased on request (docs/runbook.md "Retention",
"Personal data"): ``switchboard retention apply`` and ``switchboard customers erase``."""

from __future__ import annotations

import asyncio

import click

from pipeline import database
from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit, emit_json, json_option, usage
from pipeline.ops import BadArguments, erasure, retention


@cli.group("retention")
def retention_group() -> None:
    """Raw webhook bodies on Kafka and webhook_events rows: kept as long as documented."""


@retention_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--release", multiple=True, metavar="TOPIC", help="Replace an operator's retention.ms on this topic with switchboard's (repeatable).")  # fmt: skip
@json_option
@click.pass_context
def retention_apply(
    ctx: click.Context, dry_run: bool, release: tuple[str, ...], as_json: bool
) -> None:
    """Set SWITCHBOARD_TOPIC_RETENTION_DAYS on the topics that hold raw bodies (never over
    a value an operator set on a topic), then delete webhook_events rows older than
    SWITCHBOARD_EVENTS_RETENTION_DAYS, and never rows whose records Kafka may still hold.
    Run it daily (cron); it is idempotent.
    """
    settings = settings_from(ctx)
    with usage(), quiet_kafka():
        report = asyncio.run(retention.apply(settings, dry_run=dry_run, release=set(release)))
    if as_json:
        emit_json(report.as_dict())
        return
    for line in report.lines():
        emit(line)


@cli.group("customers")
def customers_group() -> None:
    """Customers' personal data."""


@customers_group.command("erase")
@click.option("--phone", default=None, help="The person's phone number (any formatting).")
@click.option("--email", default=None, help="The person's e-mail address.")
@click.option("--dry-run", is_flag=True, help="Count what would be erased; change nothing.")
@json_option
@click.pass_context
def customers_erase(
    ctx: click.Context, phone: str | None, email: str | None, dry_run: bool, as_json: bool
) -> None:
    """Erase a person's names, contact data and transcripts across customers, calls and
    appointments of every company; dashboard counters stay exact. The person goes on the
    erasure list, so replays and new webhooks do not store their data again.
    """
    with usage():
        if (phone is None) == (email is None):
            raise BadArguments("give exactly one of --phone and --email")
        kind, value = ("phone", phone) if phone is not None else ("email", email)
        assert value is not None
        settings = settings_from(ctx)
        engine = database.create_db_engine(settings, pool_size=1)
        try:
            database.check_database(engine)
            report = erasure.erase(engine, kind, value, dry_run=dry_run)
        finally:
            engine.dispose()
    if as_json:
        emit_json(report.as_dict())
        return
    for line in report.lines():
        emit(line)
