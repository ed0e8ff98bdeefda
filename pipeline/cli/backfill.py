"""``switchboard backfill``: rebuild the webhooks a provider never delivered, once or periodically.

Wires the backfill stage (:mod:`pipeline.backfill`) to the apply stage: the candidates are
judged by the worker's own apply path in a transaction it rolls back (``Applier`` with
``dry_run``), so an event is written only if the workers would attribute and apply it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy import Engine

from pipeline import database, providers
from pipeline.apply.applier import Applier
from pipeline.backfill.metrics import BackfillMetrics
from pipeline.backfill.periodic import Schedule, run_periodically
from pipeline.backfill.run import (
    PROVIDERS,
    Judge,
    Judgement,
    Options,
    ProviderDisabled,
    api_key,
    run_backfill,
)
from pipeline.backfill.synthesized import Synthesized
from pipeline.backfill.when import to_ms, utc_now
from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit, emit_json, json_option
from pipeline.logs import configure_logging
from pipeline.records import WebhookRecord
from pipeline.settings import Settings

log = logging.getLogger("pipeline.backfill.main")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> timedelta:
    """``90``, ``30s``, ``10m``, ``1h``, ``2d`` → a timedelta (a bad one is a usage error)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(
            f"{text!r} is not a duration like 30s, 10m, 1h, 2d", param_hint=option
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_when(text: str, option: str) -> datetime:
    """ISO-8601 → naive UTC; no offset means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 time", param_hint=option) from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def apply_judge(settings: Settings, engine: Engine) -> Judge:
    """The apply path's dry run as the backfill's judge: what would it do with these?"""
    applier = Applier(engine, dry_run=True)

    async def judge(events: Sequence[Synthesized]) -> Judgement:
        records = [
            WebhookRecord(
                topic=settings.topic(providers.get(e.provider).TOPIC),
                partition=-1,
                offset=-1 - n,
                key=e.key.encode(),
                value=e.body,
                headers={
                    "provider": e.provider,
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "received_at": str(to_ms(e.at)),
                },
            )
            for n, e in enumerate(events)
        ]
        result = await applier.apply(records)
        return Judgement(
            outcomes={o.event_id: (o.status, o.reason) for o in result.outcomes},
            changes=result.changes,
        )

    return judge


@cli.command("backfill")
@click.option("--provider", "provider_names", type=click.Choice(PROVIDERS), multiple=True, required=True, help="retell or calcom (repeat for both).")  # fmt: skip
@click.option("--since", default=None, help="Start of the window, ISO-8601 (UTC if no offset). Required without --every; with it, the first window's start.")  # fmt: skip
@click.option("--until", default=None, help="End of the window (default: now).")
@click.option("--dry-run", is_flag=True, help="Report what would be written; write nothing, move no watermark.")  # fmt: skip
@click.option("--every", default=None, help="Run periodically, e.g. 10m: each window runs from the watermark minus --margin to now minus --settle.")  # fmt: skip
@click.option("--margin", default="30m", show_default=True, help="Periodic: how far each window reaches back before the watermark.")  # fmt: skip
@click.option("--settle", default="2m", show_default=True, help="Periodic: leave the newest minutes to the webhooks still in flight.")  # fmt: skip
@click.option("--lookback", default="24h", show_default=True, help="Periodic: the first window's length when there is no watermark and no --since.")  # fmt: skip
@click.option("--meetings-lookback", default="24h", show_default=True, help="Cal.com: also list meetings that started this long before the window (late no-show marks).")  # fmt: skip
@click.option("--wait", "wait_s", type=click.FloatRange(0, 3600), default=120.0, show_default=True, help="Seconds to wait for the workers to apply what was written (0: do not wait).")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Periodic: bind address of /metrics.")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9465, show_default=True, help="Periodic: port of /metrics (0: none).")  # fmt: skip
@click.option("--metrics-textfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the metrics to this file after each run (node_exporter textfile collector).")  # fmt: skip
@click.option("--calcom-requests-per-minute", type=click.FloatRange(1, 10_000), default=110.0, show_default=True, help="Request budget for Cal.com (its API-key limit is 120/min; a burst of 10 is added).")  # fmt: skip
@click.option("--retell-requests-per-minute", type=click.FloatRange(1, 10_000), default=300.0, show_default=True, help="Request budget for Retell (no published limit).")  # fmt: skip
@click.option("--page-size", type=click.IntRange(1, 1000), default=None, help="Items per API page (default: the maximum, 1000 Retell / 250 Cal.com).")  # fmt: skip
@click.option("--loglevel", default="info", show_default=True)
@json_option
@click.pass_context
def backfill(
    ctx: click.Context,
    provider_names: tuple[str, ...],
    since: str | None,
    until: str | None,
    dry_run: bool,
    every: str | None,
    margin: str,
    settle: str,
    lookback: str,
    meetings_lookback: str,
    wait_s: float,
    metrics_host: str,
    metrics_port: int,
    metrics_textfile: Path | None,
    calcom_requests_per_minute: float,
    retell_requests_per_minute: float,
    page_size: int | None,
    loglevel: str,
    as_json: bool,
) -> None:
    """List the provider's calls or bookings through its REST API and write every webhook
    that never arrived (or arrived unusable) to the webhook topic, with the event id the
    webhook would have had. Safe to repeat and safe next to running workers: what is
    already applied is left alone. Events no branch would take are reported, never written.
    """
    settings = settings_from(ctx)
    names = list(dict.fromkeys(provider_names))
    start = parse_when(since, "--since") if since else None
    end = parse_when(until, "--until") if until else None
    options = Options(
        retell_page_size=min(page_size or 1000, 1000),
        calcom_page_size=min(page_size or 250, 250),
        retell_per_minute=retell_requests_per_minute,
        calcom_per_minute=calcom_requests_per_minute,
        meetings_lookback=parse_duration(meetings_lookback, "--meetings-lookback"),
        wait_applied_s=wait_s,
    )
    if every is None:
        if start is None:
            raise click.UsageError("--since is required (or run periodically with --every)")
        if end is not None and end <= start:
            raise click.UsageError("--until must be after --since")
        for name in names:
            api_key(settings, name)  # a disabled provider fails before anything is read
        _once(settings, names, start, end or utc_now(), dry_run, options, metrics_textfile, as_json)
        return
    if dry_run or end is not None or as_json:
        raise click.UsageError("--every runs forever: --dry-run, --until and --json do not apply")
    schedule = Schedule(
        every=parse_duration(every, "--every"),
        margin=parse_duration(margin, "--margin"),
        settle=parse_duration(settle, "--settle"),
        lookback=parse_duration(lookback, "--lookback"),
        first_since=start,
    )
    if schedule.every.total_seconds() < 1:
        raise click.UsageError("--every must be at least 1s")
    enabled, disabled = [], []
    for name in names:
        try:
            api_key(settings, name)
            enabled.append(name)
        except ProviderDisabled as exc:
            disabled.append(exc.detail)
    if not enabled:
        raise ProviderDisabled("; ".join(disabled))
    configure_logging(loglevel)
    for detail in disabled:
        log.error("%s", detail)
    _periodic(settings, enabled, schedule, options, metrics_host, metrics_port, metrics_textfile)


def _once(
    settings: Settings,
    names: list[str],
    since: datetime,
    until: datetime,
    dry_run: bool,
    options: Options,
    textfile: Path | None,
    as_json: bool,
) -> None:
    engine = database.create_db_engine(settings, pool_size=2)
    metrics = BackfillMetrics()
    reports = []
    try:
        database.check_database(engine)
        for name in names:
            with quiet_kafka():
                report = asyncio.run(
                    run_backfill(
                        settings,
                        name,
                        since,
                        until,
                        engine=engine,
                        judge=apply_judge(settings, engine),
                        dry_run=dry_run,
                        options=options,
                        metrics=metrics,
                    )
                )
            reports.append(report)
            if not as_json:
                for line in report.lines():
                    emit(line)
        if as_json:
            emit_json({"reports": [r.as_dict() for r in reports]})
    finally:
        if textfile is not None:
            metrics.write_textfile(textfile)
        engine.dispose()


def _periodic(
    settings: Settings,
    names: list[str],
    schedule: Schedule,
    options: Options,
    host: str,
    port: int,
    textfile: Path | None,
) -> None:
    engine = database.create_db_engine(settings, pool_size=4)
    metrics = BackfillMetrics()
    for name in names:
        metrics.prepare(name, providers.get(name).EVENT_TYPES)
    server = metrics.serve(host, port) if port else None
    if server is not None:
        log.info("backfill metrics on http://%s:%d/metrics", host, port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(
            run_periodically(
                settings,
                names,
                schedule,
                engine=engine,
                judge=apply_judge(settings, engine),
                metrics=metrics,
                options=options,
                stop=stop,
            )
        )
        if textfile is not None:
            asyncio.create_task(_write_textfile_forever(metrics, textfile, stop))
        await stop.wait()
        log.info("stopping the backfill")
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        database.check_database(engine)
        asyncio.run(main())
    finally:
        if server is not None:
            server.shutdown()
        engine.dispose()


async def _write_textfile_forever(
    metrics: BackfillMetrics, path: Path, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await asyncio.to_thread(metrics.write_textfile, path)
        try:
            await asyncio.wait_for(stop.wait(), 15.0)
        except TimeoutError:
            pass
