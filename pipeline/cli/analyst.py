"""Analyst commands: ``dashboard`` (the summary of docs/analyst.md as a table), ``reconcile``
(recount the buckets from MySQL rows, report drift, ``--fix`` it) and ``tokens new`` (mint
an analyst token and its hashed configuration entry). docs/analyst.md."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from pipeline import database
from pipeline.cli import cli, settings_from
from pipeline.cli.output import Progress, emit_json, json_option
from pipeline.dashboard import drift_metrics, reconcile
from pipeline.dashboard import tokens as tokens_
from pipeline.dashboard.aggregates import DAY, HOUR
from pipeline.dashboard.analyst_api import (
    AnalystApiError,
    AnalystClient,
    default_token,
    default_url,
)
from pipeline.dashboard.drift import Scope
from pipeline.models import COUNTERS

WINDOWS = ("last_hour", "today", "last_7_days", "last_30_days")
DERIVED = ("avg_duration_s", "booking_conversion")


def _client(ctx: click.Context, url: str | None, token: str | None) -> AnalystClient:
    settings = settings_from(ctx)
    token = token or default_token(settings)
    if not token:
        raise click.UsageError(
            "no analyst token: pass --token (SWITCHBOARD_ANALYST_TOKENS holds only hashed "
            "entries, or none)"
        )
    return AnalystClient(url or default_url(settings), token)


@cli.command()
@click.argument("company_id", type=click.IntRange(min=1))
@click.option(
    "--worker-url", help="Analyst API base URL (default http://SWITCHBOARD_WORKER_HOST:PORT)."
)
@click.option("--token", help="Bearer token (default: the first of SWITCHBOARD_ANALYST_TOKENS).")
@json_option
@click.pass_context
def dashboard(
    ctx: click.Context, company_id: int, worker_url: str | None, token: str | None, as_json: bool
) -> None:
    """Print a company's dashboard summary: last hour, today, last 7 and 30 days."""
    client = _client(ctx, worker_url, token)
    try:
        body = client.summary(company_id)
    except AnalystApiError as exc:
        if exc.status != 404:
            raise
        raise AnalystApiError(
            f"no data for company {company_id} in the last 30 days (HTTP 404)", status=404
        ) from exc
    if as_json:  # the analyst API's summary document, as it answered
        emit_json(body)
        return
    for line in summary_table(body):
        click.echo(line)


def summary_table(body: dict[str, Any]) -> list[str]:
    windows = body.get("windows") or {}
    header = f"company {body.get('company_id')}  as of {body.get('as_of')}"
    names = [*COUNTERS, *DERIVED]
    width = max(len(n) for n in names) + 2
    lines = [header, "", f"{'':{width}}" + "".join(f"{w:>14}" for w in WINDOWS)]
    for name in names:
        if name == DERIVED[0]:
            lines.append("")
        cells = "".join(f"{_cell(name, windows.get(w, {}).get(name)):>14}" for w in WINDOWS)
        lines.append(f"{name:{width}}{cells}")
    return lines


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name == "booking_conversion":
        return f"{float(value):.1%}"
    if name == "avg_duration_s":
        return f"{float(value):.1f}"
    if isinstance(value, float):  # cost_cents_total: cents with fractions
        return format(Decimal(repr(value)).quantize(Decimal("0.01")), "f")
    return str(value)


def _parse_time(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{raw!r} is not an ISO-8601 time", param_hint=name) from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@cli.command("reconcile")
@click.option(
    "--company",
    "company_ids",
    type=click.IntRange(min=1),
    multiple=True,
    help="Company id (repeatable).",
)
@click.option("--all", "all_companies", is_flag=True, help="Every company.")
@click.option("--from", "start", help="ISO time; default: as far back as retention keeps buckets.")
@click.option("--to", "end", help="ISO time (exclusive); default: now + 1 day.")
@click.option(
    "--granularity", type=click.Choice(["hour", "day", "both"]), default="both", show_default=True
)
@click.option(
    "--fix",
    is_flag=True,
    help="Rewrite drifting dashboard_buckets rows and re-publish every bucket of the range.",
)
@click.option("--worker-url", help="Also compare the analyst API (the Faust table) at this URL.")
@click.option(
    "--token", help="Bearer token for --worker-url (default: first SWITCHBOARD_ANALYST_TOKENS)."
)
@click.option(
    "--converge-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="With --fix and --worker-url: seconds to wait for the API to show the fix.",
)
@click.option(
    "--metrics-textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write what the run found as Prometheus gauges to this file (node_exporter textfile).",
)
@json_option
@click.pass_context
def reconcile_command(
    ctx: click.Context,
    company_ids: tuple[int, ...],
    all_companies: bool,
    start: str | None,
    end: str | None,
    granularity: str,
    fix: bool,
    worker_url: str | None,
    token: str | None,
    converge_timeout: float,
    metrics_textfile: Path | None,
    as_json: bool,
) -> None:
    """Recount dashboard buckets from MySQL rows and report (or --fix) drift.

    Exit status: 0 when nothing drifts (or --fix succeeded), 1 when drift was found
    without --fix or the fix did not converge.
    """
    if bool(company_ids) == all_companies:
        raise click.UsageError("give --company ID (repeatable) or --all")
    now = datetime.now(UTC).replace(tzinfo=None)
    since = _parse_time(start, "--from")
    until = _parse_time(end, "--to") or now + timedelta(days=1)
    if since is not None and since >= until:
        raise click.BadParameter("--from must be before --to", param_hint="--from")
    granularities = (HOUR, DAY) if granularity == "both" else (granularity,)
    scope = Scope(granularities, since, until, now)
    settings = settings_from(ctx)
    client = _client(ctx, worker_url, token) if worker_url else None
    progress = Progress("reconcile")

    def on_company(phase: str, done: int, total: int, company: int) -> None:
        if progress.label != f"reconcile {phase}":
            progress.label = f"reconcile {phase}"
            progress.plan(total)
        progress.update(done, f"company {company}")

    options = reconcile.Options(
        company_ids=company_ids or None,
        scope=scope,
        fix=fix,
        client=client,
        converge_s=converge_timeout,
        on_company=on_company,
    )
    engine = database.create_db_engine(settings, pool_size=2)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)  # we report failures ourselves
    try:
        database.check_database(engine)
        report = reconcile.run(settings, engine, options)
    finally:
        engine.dispose()
    if metrics_textfile is not None:
        drift_metrics.write_textfile(report, metrics_textfile)
    if as_json:
        emit_json({"ok": report.ok, "drift_found": report.drift_found, **asdict(report)})
    else:
        for line in reconcile.render(report):
            click.echo(line)
    if not report.ok:
        sys.exit(1)


def _company_list(raw: str) -> frozenset[int]:
    try:
        scope = tokens_.parse_scope(raw.replace(",", "+").replace(" ", ""))
        if scope is None:
            raise ValueError("admin is --admin")
        return scope
    except ValueError as exc:
        raise click.BadParameter(
            "give company ids separated by commas (1,2,7)", param_hint="--companies"
        ) from exc


@cli.group()
def tokens() -> None:
    """Analyst API tokens (docs/analyst.md, "Tokens")."""


@tokens.command("new")
@click.option("--companies", help="Company ids the token may read, comma-separated (1,2,7).")
@click.option("--admin", is_flag=True, help="A token that may read every company.")
@click.option("--name", help="A label for logs and for rotation (letters, digits, . _ -).")
@json_option
def tokens_new(companies: str | None, admin: bool, name: str | None, as_json: bool) -> None:
    """Mint a token and print its SWITCHBOARD_ANALYST_TOKENS entry.

    The token is printed once, for the analyst; the workers get only the entry (its
    SHA-256 and scope). To rotate, add the new entry beside the old one, hand out the new
    token, then remove the old entry.
    """
    if bool(companies) == admin:
        raise click.UsageError("give --companies 1,2 or --admin")
    if name is not None and not tokens_.valid_name(name):
        raise click.BadParameter("letters, digits, '.', '_' and '-' only", param_hint="--name")
    scope = None if admin else _company_list(companies or "")
    token = tokens_.mint()
    entry = tokens_.config_entry(token, scope, name)
    if as_json:
        emit_json({"token": token, "entry": entry})
        return
    click.echo(f"token:  {token}")
    click.echo(f"entry:  {entry}")
    click.echo(
        "Give the token to the analyst (it is not stored anywhere); add the entry to "
        "SWITCHBOARD_ANALYST_TOKENS (comma-separated) on every worker and restart them."
    )
