"""``switchboard events show|find|list|reapply``: what happened to webhooks (docs/runbook.md).

Thin: arguments in, :mod:`pipeline.ops.lineage`, :mod:`pipeline.ops.events` and
:mod:`pipeline.ops.unroutable` called, results out as text (phone numbers masked,
transcripts cut, control characters neutralised) or ``--json``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pipeline import database
from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.dlq import headers_text
from pipeline.cli.output import emit, emit_json, json_option, unmasked_option, usage
from pipeline.cli.replay import RunProgress, batch_size_option, report_lines
from pipeline.ops import arguments, present
from pipeline.ops import events as finder
from pipeline.ops.lineage import lineage
from pipeline.ops.report import RunReport
from pipeline.ops.unroutable import reapply
from pipeline.providers import PROVIDERS
from pipeline.records import WebhookRecord

PROVIDER_CHOICE = click.Choice(sorted(PROVIDERS))


@cli.group("events")
def events_group() -> None:
    """What happened to webhooks: one in full, found by what support is asked, by status."""


@events_group.command("show")
@click.argument("provider", type=PROVIDER_CHOICE)
@click.argument("event_id")
@unmasked_option
@json_option
@click.pass_context
def events_show(
    ctx: click.Context, provider: str, event_id: str, unmasked: bool, as_json: bool
) -> None:
    """One webhook: its webhook_events row, the rows it touched, its raw body from Kafka."""
    settings = settings_from(ctx)
    with quiet_kafka():
        found = asyncio.run(lineage(settings, provider, event_id))
    if as_json:
        record = found.record
        emit_json(
            present.scrub(
                {
                    "event": found.event,
                    "calls": found.calls,
                    "appointments": found.appointments,
                    "kafka": found.body_note,
                    "headers": dict(record.headers) if record else None,
                    "body": present.body_value(record.value) if record else None,
                },
                unmasked=unmasked,
            )
        )
        return
    emit(f"webhook_events ({provider} {event_id}):")
    emit(present.field_lines(found.event, unmasked=unmasked))
    for table, rows, keys in (
        ("calls", found.calls, found.call_ids),
        ("appointments", found.appointments, found.uids),
    ):
        if not keys:
            continue
        if not rows:
            emit(f"{table}: no row for {', '.join(keys)}")
        for row in rows:
            emit(f"{table} (id {row['id']}):")
            emit(present.field_lines(row, unmasked=unmasked))
    emit(f"kafka record: {found.body_note}")
    if found.record is not None:
        emit("headers:")
        emit(headers_text(found.record, unmasked))
        emit(f"body ({len(found.record.value)} bytes):")
        emit(present.body_text(found.record.value, unmasked=unmasked))


def _since(value: str | None, option: str) -> Any:
    return finder.naive_utc(arguments.parse_time(value, option)) if value else None


HEADER = ["CREATED_AT", "PROVIDER", "EVENT_TYPE", "EVENT_ID", "STATUS", "ERROR", "COMPANY",
          "SOURCE", "CORRELATION_ID"]  # fmt: skip


def _row_cells(row: dict[str, Any]) -> list[Any]:
    return [
        present.format_time(row["created_at"]),
        row["provider"],
        row["event_type"],
        row["event_id"],
        row["status"],
        present.truncate(row["error"], 60) if row["error"] else None,
        row["company_id"],
        f"{row['kafka_topic']}/{row['kafka_partition']}@{row['kafka_offset']}",
        row["correlation_id"],
    ]


def _print_found(found: finder.Found, as_json: bool, unmasked: bool, extra: dict[str, Any]) -> None:
    if as_json:
        emit_json(
            present.scrub(
                {**extra, "total": found.total, "events": found.rows, **found.subjects},
                unmasked=unmasked,
            )
        )
        return
    if not found.rows:
        emit("no webhook events match")
        return
    text = present.table(HEADER, [_row_cells(r) for r in found.rows])
    emit(text if unmasked else present.mask_text(text))
    shown = len(found.rows)
    emit(
        f"{found.total} event(s)"
        + (f", the newest {shown} shown (--limit)" if shown < found.total else "")
    )


def _limit_option(func: Any) -> Any:
    return click.option(
        "--limit",
        type=click.IntRange(1, 100_000),
        default=200,
        show_default=True,
        help="Show at most this many (the newest).",
    )(func)


@events_group.command("find")
@click.option("--call-id", default=None, help="A Retell call id (call_...).")
@click.option("--booking-uid", default=None, help="A Cal.com booking uid.")
@click.option("--correlation-id", default=None, help="The X-Correlation-ID the ingress answered.")  # fmt: skip
@click.option("--phone", default=None, help="A caller's or attendee's phone number (E.164).")
@click.option("--company", "company_id", type=int, default=None, help="A company id.")
@click.option("--since", default=None, help="Only events processed at or after this ISO-8601 time.")  # fmt: skip
@click.option("--until", default=None, help="Only events processed at or before this ISO-8601 time.")  # fmt: skip
@_limit_option
@unmasked_option
@json_option
@click.pass_context
def events_find(
    ctx: click.Context,
    call_id: str | None,
    booking_uid: str | None,
    correlation_id: str | None,
    phone: str | None,
    company_id: int | None,
    since: str | None,
    until: str | None,
    limit: int,
    unmasked: bool,
    as_json: bool,
) -> None:
    """Webhook events by what support is asked about (give exactly one subject).

    \b
    Examples:
      switchboard events find --call-id call_5f2c9e81d4a04b7a9e3b11c0a7d2e6f4
      switchboard events find --booking-uid mG7qT2xZr9KpL4vN8sWb1c
      switchboard events find --correlation-id 6b1f0c1e-5d0c-4c1e-9a43-2f1c0e7b9d21
      switchboard events find --phone +14155550142
      switchboard events find --company 7 --since 2026-01-05T00:00:00Z
    """
    with usage():
        what = finder.Find(
            call_id=call_id,
            booking_uid=booking_uid,
            correlation_id=correlation_id,
            phone=phone,
            company_id=company_id,
            since=_since(since, "--since"),
            until=_since(until, "--until"),
            limit=limit,
        )
        what.check()
    settings = settings_from(ctx)
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        database.check_database(engine)
        with engine.connect() as conn:
            found = finder.find(conn, what)
    finally:
        engine.dispose()
    _print_found(found, as_json, unmasked, {})


def _status_filters(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--reason",
                default=None,
                help="The reason (webhook_events.error), e.g. no_branch_for_number.",
            ),  # fmt: skip
            click.option("--provider", type=PROVIDER_CHOICE, default=None),
            click.option(
                "--since", default=None, help="Processed at or after this ISO-8601 time."
            ),  # fmt: skip
            click.option(
                "--until", default=None, help="Processed at or before this ISO-8601 time."
            ),  # fmt: skip
        ]
    ):
        func = option(func)
    return func


@events_group.command("list")
@click.option("--status", type=click.Choice(finder.STATUSES), default="unroutable", show_default=True)  # fmt: skip
@_status_filters
@_limit_option
@json_option
@click.pass_context
def events_list(
    ctx: click.Context,
    status: str,
    reason: str | None,
    provider: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Webhook events by status: `unroutable` (no branch took them), with their reasons.

    Unroutable events are not lost: after the tenant data is fixed (`tenants import`),
    `switchboard events reapply` applies the ones that now have a home.
    """
    with usage():
        what = finder.Listing(
            status=status,
            reason=reason,
            provider=provider,
            since=_since(since, "--since"),
            until=_since(until, "--until"),
            limit=limit,
        )
        what.check()
    settings = settings_from(ctx)
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        database.check_database(engine)
        with engine.connect() as conn:
            found = finder.listing(conn, what)
            by_reason = finder.reasons(conn, status)
    finally:
        engine.dispose()
    _print_found(found, as_json, False, {"status": status, "by_reason": by_reason})
    if not as_json and by_reason:
        emit(f"all {status} events by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items())))  # fmt: skip
        if status == "unroutable" and found.rows:
            emit("after fixing the tenant data: switchboard events reapply --dry-run, then without --dry-run")  # fmt: skip


class ReapplyProgress(RunProgress):
    def __call__(self, report: RunReport, last: WebhookRecord) -> None:
        self.update(report.read + sum(report.skipped.values()), report.summary())


@events_group.command("reapply")
@_status_filters
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@batch_size_option
@json_option
@click.pass_context
def events_reapply(
    ctx: click.Context,
    reason: str | None,
    provider: str | None,
    since: str | None,
    until: str | None,
    dry_run: bool,
    batch_size: int,
    as_json: bool,
) -> None:
    """Apply unroutable events again through the normal apply path (after `tenants import`).

    Reads each matching unroutable event back from Kafka at its recorded coordinates and
    applies it like the worker: the ones that now have a branch become `applied` (once:
    any later replay finds them applied), the others stay `unroutable`. Safe to repeat.
    """
    with usage():
        what = finder.Listing(
            status="unroutable",
            reason=reason,
            provider=provider,
            since=_since(since, "--since"),
            until=_since(until, "--until"),
        )
    settings = settings_from(ctx)
    progress = ReapplyProgress("reapply")
    with quiet_kafka():
        report = asyncio.run(
            reapply(
                settings,
                what,
                dry_run=dry_run,
                batch_size=batch_size,
                on_progress=progress,
                on_plan=progress.plan,
            )
        )
    if as_json:
        emit_json(report.as_dict())
        return
    if not report.read and not report.skipped:
        emit("no unroutable events match")
        return
    emit(f"re-applying unroutable events{' [dry run: nothing written]' if dry_run else ''}")
    for why, n in sorted(report.skipped.items()):
        emit(f"  skipped {n}: {why}")
    for line in report_lines(report):
        emit(line)
