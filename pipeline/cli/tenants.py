"""Tenant commands: ``tenants import`` (the companies and branches traffic is attributed to).

``tenants seed`` (generated tenants for simulated traffic) is added by the testbed plugin.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path

import click

from pipeline import database
from pipeline import tenants as tenant_store
from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit_json, json_option
from pipeline.ops import unroutable


@cli.group()
def tenants() -> None:
    """Import or generate the companies and branches that traffic is routed to."""


def import_into_database(
    ctx: click.Context, items: list[tenant_store.Company]
) -> tenant_store.ImportReport:
    settings = settings_from(ctx)
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        database.check_database(engine)
        with engine.begin() as conn:
            return tenant_store.import_tenants(conn, items)
    finally:
        engine.dispose()


@tenants.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def tenants_import(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Upsert the companies and branches of FILE (JSON), keyed by branch phone number.

    Importing the same file again changes nothing. Afterwards it says how many
    unroutable events now have a home and how to apply them (`events reapply`). FILE is
    {"companies": [{"name", "timezone", "is_active", "branches": [{"name", "phone_number",
    "retell_agent_id", "calcom_event_type_id", "is_active"}]}]}.
    """
    items = tenant_store.read_file(file)
    report = import_into_database(ctx, items)
    hint = unroutable_hint(ctx)
    if as_json:
        emit_json({**asdict(report), "unroutable": asdict(hint)})
        return
    click.echo(report.line())
    for line in hint.lines():
        click.echo(line)


def unroutable_hint(ctx: click.Context) -> unroutable.Preview:
    """How many unroutable events the directory can place now, and how to apply them
    (a dry run of their re-apply; Kafka unreachable only costs the hint)."""
    settings = settings_from(ctx)
    engine = database.create_db_engine(settings, pool_size=2)
    try:
        with quiet_kafka():
            found = asyncio.run(unroutable.preview(settings, engine))
    finally:
        engine.dispose()
    return found
