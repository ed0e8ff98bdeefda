"""Operations commands: ``replay``, ``dlq list|show|redrive``, ``events show``.

Thin: parse and check the arguments (:mod:`pipeline.ops.arguments`), call the async
functions of :mod:`pipeline.ops`, print. Results go to stdout, progress to stderr. Bodies
and rows are printed with secrets hidden, phone numbers masked (``--unmasked`` for an
operator allowed to see them) and transcripts truncated (:mod:`pipeline.ops.present`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.ops import BadArguments, arguments, present
from pipeline.ops.dlq import DlqFilter, list_dead_letters, redrive, show_dead_letter
from pipeline.ops.lineage import lineage
from pipeline.ops.replay import DEFAULT_BATCH_SIZE, replay
from pipeline.ops.report import RunReport
from pipeline.records import WebhookRecord

UNMASKED_HELP = "Show phone numbers in full (authorized operators only)."


@contextmanager
def usage() -> Iterator[None]:
    """Bad arguments fail like click's own: exit 2 and one ``Error:`` line."""
    try:
        yield
    except BadArguments as exc:
        raise click.UsageError(str(exc)) from exc


class ProgressLines:
    """At most one progress line on stderr every ``every_s`` seconds."""

    def __init__(self, label: str, every_s: float = 2.0) -> None:
        self.label = label
        self.every_s = every_s
        self.last = time.monotonic()

    def __call__(self, report: RunReport, last: WebhookRecord) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        click.echo(
            f"{self.label}: {report.read} read, at {last.coordinates}; {report.summary()}",
            err=True,
        )


def _print_report(report: RunReport) -> None:
    click.echo(report.summary())
    for line in report.reason_lines():
        click.echo(line)
    for line in report.change_lines():
        click.echo(line)
    if not report.dry_run:
        click.echo(
            f"published: {report.dead_letters_published} dead letter(s), "
            f"{report.snapshots_published} bucket snapshot(s)"
        )


def _headers_text(record: WebhookRecord, unmasked: bool) -> str:
    return present.field_lines(
        present.safe_headers(record.headers, unmasked=unmasked), unmasked=unmasked
    )


def _batch_size_option(func: Any) -> Any:
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 10_000),
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="Records per apply transaction.",
    )(func)


# --- replay ------------------------------------------------------------------------------


@cli.command("replay")
@click.option("--topic", "topic", required=True, help="webhooks.retell or webhooks.calcom (the configured prefix is added).")  # fmt: skip
@click.option("--partition", "partition", type=int, multiple=True, help="Only this partition (repeatable); default all.")  # fmt: skip
@click.option("--from-offset", type=int, default=None, help="First offset, in each chosen partition.")  # fmt: skip
@click.option("--from-time", default=None, help="First record at or after this ISO-8601 time (UTC if no offset).")  # fmt: skip
@click.option("--to-offset", type=int, default=None, help="Last offset, inclusive (default: the end).")  # fmt: skip
@click.option("--to-time", default=None, help="Last record at or before this ISO-8601 time.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Report what would change per table and company; write nothing.")  # fmt: skip
@_batch_size_option
@click.pass_context
def replay_command(
    ctx: click.Context,
    topic: str,
    partition: tuple[int, ...],
    from_offset: int | None,
    from_time: str | None,
    to_offset: int | None,
    to_time: str | None,
    dry_run: bool,
    batch_size: int,
) -> None:
    """Re-apply a stretch of a webhook topic through the worker's apply path.

    Safe next to running workers and safe to repeat: events already applied change
    nothing, rows lost since (deleted, restored from a backup) are restored. Prints the
    counts read, applied, already applied, unroutable and dead-lettered.
    """
    with usage():
        stretch = arguments.build_stretch(
            from_offset=from_offset, from_time=from_time, to_offset=to_offset, to_time=to_time
        )
        partitions = arguments.parse_partitions(partition)
        settings = settings_from(ctx)
        full_topic = arguments.resolve_topic(settings, topic)
    with quiet_kafka():
        report = asyncio.run(
            replay(
                settings,
                topic,
                stretch,
                partitions=partitions,
                dry_run=dry_run,
                batch_size=batch_size,
                on_progress=ProgressLines("replay"),
            )
        )
    where = "all partitions" if partitions is None else f"partition(s) {partitions}"
    click.echo(
        f"replay of {full_topic} ({where}){' [dry run: nothing written]' if dry_run else ''}"
    )
    _print_report(report)


# --- dlq ---------------------------------------------------------------------------------


@cli.group("dlq")
def dlq_group() -> None:
    """List, show and redrive dead letters (webhooks.dlq)."""


def _filter_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--since", default=None, help="Dead-lettered at or after this ISO-8601 time."
            ),
            click.option(
                "--reason",
                default=None,
                help="Latest reason, e.g. schema_violation, internal_error.",
            ),
            click.option("--provider", type=click.Choice(["retell", "calcom"]), default=None),
            click.option("--event-type", default=None, help="e.g. call_ended, BOOKING_CREATED."),
            click.option("--event-id", default=None, help="One event."),
        ]
    ):
        func = option(func)
    return func


def _filter(
    since: str | None,
    reason: str | None,
    provider: str | None,
    event_type: str | None,
    event_id: str | None,
) -> DlqFilter:
    return DlqFilter(
        since_ms=arguments.parse_time(since, "--since") if since is not None else None,
        reason=reason,
        provider=provider,
        event_type=event_type,
        event_id=event_id,
    )


@dlq_group.command("list")
@_filter_options
@click.option("--pending", is_flag=True, help="Leave out events that are applied by now.")
@click.pass_context
def dlq_list(
    ctx: click.Context,
    since: str | None,
    reason: str | None,
    provider: str | None,
    event_type: str | None,
    event_id: str | None,
    pending: bool,
) -> None:
    """The latest dead letter of each event, oldest first (never the body).

    STATUS is the event's webhook_events status now: `applied` means resolved (redriven,
    replayed or fixed); `-` means no row (an internal_error rolls its batch back).
    COPIES counts the event's dead letters (each failed redrive adds one).
    """
    with usage():
        flt = _filter(since, reason, provider, event_type, event_id)
    settings = settings_from(ctx)
    with quiet_kafka():
        listed = asyncio.run(list_dead_letters(settings, flt, pending_only=pending))
    if not listed:
        click.echo("no dead letters match")
        return
    rows = [
        [
            item.entry.position,
            arguments.format_ms(item.entry.info.dead_lettered_at_ms),
            item.entry.provider,
            item.entry.event_type,
            item.entry.event_id,
            item.entry.info.reason,
            item.entry.info.previous_reason,
            item.entry.source,
            item.status,
            item.copies,
        ]
        for item in listed
    ]
    header = ["OFFSET", "DEAD_LETTERED_AT", "PROVIDER", "EVENT_TYPE", "EVENT_ID", "REASON",
              "PREVIOUS_REASON", "SOURCE", "STATUS", "COPIES"]  # fmt: skip
    click.echo(present.mask_text(present.table(header, rows)))
    click.echo(f"{len(listed)} event(s)")


@dlq_group.command("show")
@click.argument("position")
@click.option("--unmasked", is_flag=True, help=UNMASKED_HELP)
@click.pass_context
def dlq_show(ctx: click.Context, position: str, unmasked: bool) -> None:
    """One dead letter: its headers and its body, pretty-printed.

    POSITION is PARTITION:OFFSET as `dlq list` prints it; a bare OFFSET means partition 0.
    """
    with usage():
        partition, offset = arguments.parse_position(position)
    settings = settings_from(ctx)
    with quiet_kafka():
        entry = asyncio.run(show_dead_letter(settings, partition, offset))
    info = entry.info
    summary = {
        "position": entry.position,
        "dead_lettered_at": arguments.format_ms(info.dead_lettered_at_ms),
        "reason": info.reason,
        "previous_reason": info.previous_reason,
        "error_class": info.error_class,
        "detail": info.detail,
        "source": entry.source,
        "key": (entry.record.key or b"").decode("utf-8", "replace"),
    }
    click.echo(f"dead letter {entry.position} of {entry.record.topic}")
    click.echo(present.field_lines(summary, unmasked=unmasked))
    click.echo("headers:")
    click.echo(_headers_text(entry.record, unmasked))
    click.echo(f"body ({len(entry.record.value)} bytes):")
    click.echo(present.body_text(entry.record.value, unmasked=unmasked))


@dlq_group.command("redrive")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@_batch_size_option
@click.pass_context
def dlq_redrive(
    ctx: click.Context,
    since: str | None,
    reason: str | None,
    provider: str | None,
    event_type: str | None,
    event_id: str | None,
    dry_run: bool,
    batch_size: int,
) -> None:
    """Put matching dead letters back through the normal apply path.

    Takes the latest dead letter of each matching event that is not applied yet, applies
    it at its source coordinates, publishes snapshots; an event that fails again is
    dead-lettered again with `previous_reason`. Idempotent: applied events are skipped,
    and the apply path deduplicates anyway.
    """
    with usage():
        flt = _filter(since, reason, provider, event_type, event_id)
    settings = settings_from(ctx)
    with quiet_kafka():
        report = asyncio.run(
            redrive(
                settings,
                flt,
                dry_run=dry_run,
                batch_size=batch_size,
                on_progress=ProgressLines("redrive"),
            )
        )
    if not report.read and not report.skipped:
        click.echo("no dead letters match")
        return
    click.echo(f"redriving {report.read} dead letter(s){' [dry run]' if dry_run else ''}")
    for why, n in sorted(report.skipped.items()):
        click.echo(f"  skipped {n}: {why}")
    _print_report(report)


# --- events ------------------------------------------------------------------------------


@cli.group("events")
def events_group() -> None:
    """What happened to webhooks."""


@events_group.command("show")
@click.argument("provider", type=click.Choice(["retell", "calcom"]))
@click.argument("event_id")
@click.option("--unmasked", is_flag=True, help=UNMASKED_HELP)
@click.pass_context
def events_show(ctx: click.Context, provider: str, event_id: str, unmasked: bool) -> None:
    """One webhook: its webhook_events row, the rows it touched, its raw body from Kafka."""
    settings = settings_from(ctx)
    with quiet_kafka():
        found = asyncio.run(lineage(settings, provider, event_id))
    click.echo(f"webhook_events ({provider} {event_id}):")
    click.echo(present.field_lines(found.event, unmasked=unmasked))
    for table, rows, keys in (
        ("calls", found.calls, found.call_ids),
        ("appointments", found.appointments, found.uids),
    ):
        if not keys:
            continue
        if not rows:
            click.echo(f"{table}: no row for {', '.join(keys)}")
        for row in rows:
            click.echo(f"{table} (id {row['id']}):")
            click.echo(present.field_lines(row, unmasked=unmasked))
    click.echo(f"kafka record: {found.body_note}")
    if found.record is not None:
        click.echo("headers:")
        click.echo(_headers_text(found.record, unmasked))
        click.echo(f"body ({len(found.record.value)} bytes):")
        click.echo(present.body_text(found.record.value, unmasked=unmasked))
