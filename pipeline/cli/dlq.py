"""``switchboard dlq list|show|redrive``: dead letters on ``webhooks.dlq`` (docs/runbook.md).

Thin: arguments in, :mod:`pipeline.ops.dlq` called, results out as text (phone numbers
masked, secrets hidden, control characters neutralised) or ``--json``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit, emit_json, json_option, unmasked_option, usage
from pipeline.cli.replay import RunProgress, batch_size_option, report_lines
from pipeline.ops import arguments, present
from pipeline.ops.dlq import (
    DeadLetterEntry,
    DlqFilter,
    Listed,
    list_dead_letters,
    redrive,
    resolve_source,
    show_dead_letters,
)
from pipeline.providers import PROVIDERS
from pipeline.records import WebhookRecord
from pipeline.settings import Settings


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
            click.option("--provider", type=click.Choice(sorted(PROVIDERS)), default=None),
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


def headers_text(record: WebhookRecord, unmasked: bool) -> str:
    return present.field_lines(
        present.safe_headers(record.headers, unmasked=unmasked), unmasked=unmasked
    )


def _listed_dict(item: Listed) -> dict[str, Any]:
    entry = item.entry
    return {
        "position": entry.position,
        "partition": entry.partition,
        "offset": entry.offset,
        "dead_lettered_at": arguments.format_ms(entry.info.dead_lettered_at_ms),
        "provider": entry.provider,
        "event_type": entry.event_type,
        "event_id": entry.event_id,
        "reason": entry.info.reason,
        "previous_reason": entry.info.previous_reason,
        "source": entry.source,
        "status": item.status,
        "copies": item.copies,
    }


@dlq_group.command("list")
@_filter_options
@click.option("--pending", is_flag=True, help="Leave out events that are applied by now.")
@json_option
@click.pass_context
def dlq_list(
    ctx: click.Context,
    since: str | None,
    reason: str | None,
    provider: str | None,
    event_type: str | None,
    event_id: str | None,
    pending: bool,
    as_json: bool,
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
    if as_json:
        emit_json({"dead_letters": [_listed_dict(item) for item in listed], "count": len(listed)})
        return
    if not listed:
        emit("no dead letters match")
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
    emit(present.mask_text(present.table(header, rows)))
    emit(f"{len(listed)} event(s)")


@dlq_group.command("show")
@click.argument("position")
@unmasked_option
@json_option
@click.pass_context
def dlq_show(ctx: click.Context, position: str, unmasked: bool, as_json: bool) -> None:
    """One dead letter: its headers and its body, pretty-printed.

    POSITION is PARTITION:OFFSET as `dlq list` prints it, or a bare OFFSET: every dead
    letter at that offset, whichever partition holds it (partitions number their records
    from 0). With --json: the dead letter's object, or an array when a bare OFFSET finds
    several.
    """
    with usage():
        partition, offset = arguments.parse_position(position)
    settings = settings_from(ctx)
    with quiet_kafka():
        entries, bodies = asyncio.run(_shown_letters(settings, partition, offset))
    if as_json:
        shown = [_shown(e, b, unmasked) for e, b in zip(entries, bodies, strict=True)]
        emit_json(shown[0] if len(shown) == 1 else shown)
        return
    if len(entries) > 1:
        where = ", ".join(entry.position for entry in entries)
        emit(f"offset {offset} is on {len(entries)} partitions: {where}")
    for i, (entry, body) in enumerate(zip(entries, bodies, strict=True)):
        if i:
            emit("")
        _print(entry, body, unmasked)


async def _shown_letters(
    settings: Settings, partition: int | None, offset: int
) -> tuple[list[DeadLetterEntry], list[bytes | None]]:
    """The dead letters at the position, and their bodies: one too large to travel inline
    is read at its source."""
    entries = await show_dead_letters(settings, partition, offset)
    bodies: list[bytes | None] = []
    for entry in entries:
        if entry.info.body_reference:
            source = await resolve_source(settings, entry)
            bodies.append(source.value if source is not None else None)
        else:
            bodies.append(entry.record.value)
    return entries, bodies


def _summary(entry: DeadLetterEntry) -> dict[str, Any]:
    info = entry.info
    return {
        "position": entry.position,
        "dead_lettered_at": arguments.format_ms(info.dead_lettered_at_ms),
        "reason": info.reason,
        "previous_reason": info.previous_reason,
        "error_class": info.error_class,
        "detail": info.detail,
        "source": entry.source,
        "key": (entry.record.key or b"").decode("utf-8", "replace"),
    }


def _shown(entry: DeadLetterEntry, body: bytes | None, unmasked: bool) -> Any:
    return present.scrub(
        {
            **_summary(entry),
            "topic": entry.record.topic,
            "headers": present.safe_headers(entry.record.headers, unmasked=unmasked),
            "body": None if body is None else present.body_value(body),
            "body_from": "source" if entry.info.body_reference else "dead letter",
        },
        unmasked=unmasked,
    )


def _print(entry: DeadLetterEntry, body: bytes | None, unmasked: bool) -> None:
    info = entry.info
    emit(f"dead letter {entry.position} of {entry.record.topic}")
    emit(present.field_lines(_summary(entry), unmasked=unmasked))
    emit("headers:")
    emit(headers_text(entry.record, unmasked))
    if body is None:
        emit(
            f"body: too large to dead-letter inline ({info.body_bytes} bytes), and no longer"
            f" on its source record {entry.source} (retention?)"
        )
        return
    where = f", from its source record {entry.source}" if info.body_reference else ""
    emit(f"body ({len(body)} bytes{where}):")
    emit(present.body_text(body, unmasked=unmasked))


@dlq_group.command("redrive")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@batch_size_option
@json_option
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
    as_json: bool,
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
                on_progress=RunProgress("redrive"),
            )
        )
    if as_json:
        emit_json({"redriven": report.redriven, **report.as_dict()})
        return
    if not report.read and not report.skipped:
        emit("no dead letters match")
        return
    emit(f"redriving {report.read} dead letter(s){' [dry run]' if dry_run else ''}")
    for why, n in sorted(report.skipped.items()):
        emit(f"  skipped {n}: {why}")
    for line in report_lines(report):
        emit(line)
