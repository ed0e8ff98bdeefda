"""``switchboard spool salvage FILE``: send the readable records of a damaged ingress spool
file to Kafka (docs/runbook.md, "Ingress spool"), instead of SQLite's shell and a
hand-made producer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from aiokafka.errors import KafkaError

from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit, emit_json, json_option
from pipeline.errors import KafkaUnavailable
from pipeline.ingress import salvage
from pipeline.kafka import DurableProducer
from pipeline.settings import Settings

#: Records per acknowledged send: bounded memory for the in-flight futures.
CHUNK = 500


@cli.group()
def spool() -> None:
    """The ingress's local spool (docs/ingress.md, "Spool")."""


@spool.command("salvage")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Count what can be read; send nothing.")
@json_option
@click.pass_context
def salvage_command(ctx: click.Context, file: Path, dry_run: bool, as_json: bool) -> None:
    """Read every record SQLite can still read from FILE (a spool file an ingress moved
    aside as `ingress-<slot>.sqlite3.corrupt-<time>`, with its -wal beside it) and send each
    to its topic with its key and headers. FILE is never written to.

    Records forwarded before the damage are sent again: the workers deduplicate them.
    Unreadable rows are counted by their sequence number; they are lost from the spool
    (`switchboard backfill` over the spool's time window rebuilds what the providers'
    APIs still know).
    """
    found = salvage.read(file)
    sent = 0
    if not dry_run and found.records:
        settings = settings_from(ctx)
        with quiet_kafka():
            sent = asyncio.run(_send(settings, found))
    if as_json:
        emit_json(
            {
                "path": found.path,
                "readable": len(found.records),
                "by_topic": found.by_topic(),
                "unreadable": found.unreadable,
                "damaged": found.damaged,
                "sent": sent,
                "dry_run": dry_run,
            }
        )
        return
    topics = ", ".join(f"{t} {n:,}" for t, n in sorted(found.by_topic().items()))
    emit(f"{found.path}: {len(found.records):,} record(s) readable ({topics or 'none'})")
    if found.unreadable:
        shown = ", ".join(str(seq) for seq in found.unreadable[:20])
        more = ", ..." if len(found.unreadable) > 20 else ""
        emit(f"unreadable: {len(found.unreadable):,} row(s) (seq {shown}{more})")
    if dry_run:
        emit(f"would send {len(found.records):,} record(s) [dry run: nothing sent]")
    else:
        emit(f"sent {sent:,} record(s), each acknowledged by Kafka (duplicates are deduplicated)")


async def _send(settings: Settings, found: salvage.Salvage) -> int:
    sent = 0
    try:
        async with DurableProducer(settings, client_id="switchboard-spool-salvage") as producer:
            for start in range(0, len(found.records), CHUNK):
                chunk = found.records[start : start + CHUNK]
                await producer.send_all((r.topic, r.key, r.value, r.headers) for r in chunk)
                sent += len(chunk)
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"Kafka failed after {sent:,} of {len(found.records):,} record(s): "
            f"{exc.__class__.__name__} (running it again is safe)"
        ) from exc
    return sent
