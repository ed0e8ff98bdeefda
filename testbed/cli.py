"""Testbed commands, added to ``switchboard`` as a plugin: ``tenants seed``, ``simulate``,
``verify-run`` and ``fake-providers``.

The demo flow is: seed tenants, run the pipeline, ``simulate --expected FILE``, then
``verify-run FILE`` (docs/simulator.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.cli import cli, settings_from
from pipeline.cli.tenants import import_into_database, tenants
from pipeline.dashboard.analyst_api import default_token
from pipeline.errors import SwitchboardError
from testbed.simulator import tenants as tenant_store
from testbed.simulator.run import OutageFiles, SimulationConfig, run_simulation, write_json
from testbed.simulator.scenario import ScenarioConfig
from testbed.simulator.sender import Progress, SendConfig
from testbed.simulator.verify import Difference, verify

SHARE = click.FloatRange(0.0, 1.0)


@tenants.command("seed")
@click.option(
    "--companies",
    "count",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="How many companies to generate (1-3 branches each).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same tenants.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the tenants as a JSON file (the format `tenants import` reads).",
)
@click.option("--no-db", is_flag=True, help="Only write --output; do not touch MySQL.")
@click.pass_context
def tenants_seed(
    ctx: click.Context, count: int, seed: int, output: Path | None, no_db: bool
) -> None:
    """Generate realistic companies (varied time zones) and upsert them into MySQL."""
    if no_db and output is None:
        raise click.UsageError("--no-db needs --output")
    items = tenant_store.generate(count, seed)
    if output is not None:
        output.write_bytes(tenant_store.to_json(items) + b"\n")
        click.echo(f"wrote {len(items)} companies to {output}")
    if not no_db:
        click.echo(import_into_database(ctx, items).line())


@cli.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The ingress.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same traffic.")
@click.option("--calls", type=click.IntRange(1), help="Calls to simulate (default 200).")
@click.option(
    "--duration",
    type=click.FloatRange(min=1.0),
    help="Or: size the run to last about this many seconds at --rate.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.0),
    default=50.0,
    show_default=True,
    help="Deliveries per second (0: as fast as --concurrency allows).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="Requests in flight at most.",
)
@click.option(
    "--bad-share",
    type=click.FloatRange(0.0, 0.5),
    default=0.0,
    show_default=True,
    help="Share of deliveries that are bad traffic: unknown numbers, bad signatures, "
    "malformed bodies.",
)
@click.option(
    "--duplicate-share",
    type=SHARE,
    default=0.08,
    show_default=True,
    help="Share of webhooks the provider delivers 2-4 times.",
)
@click.option(
    "--reorder-share",
    type=SHARE,
    default=0.3,
    show_default=True,
    help="Share of webhooks delivered late (out of order).",
)
@click.option(
    "--span-hours",
    type=click.FloatRange(1.0, 23.0),
    default=6.0,
    show_default=True,
    help="The simulated day: payload times spread over the last N hours.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=1.0),
    default=120.0,
    show_default=True,
    help="Seconds to keep retrying one delivery answered 503 (or unreachable).",
)
@click.option(
    "--expected",
    "expected_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the expected final state here (for verify-run).",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary as JSON.",
)
@click.option(
    "--drop-share",
    type=click.FloatRange(0.0, 0.9),
    default=0.0,
    show_default=True,
    help="Share of webhooks lost upstream on purpose (an outage): never sent at all. Needs "
    "--provider-state and --expected-after-backfill.",
)
@click.option(
    "--provider-state",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the story as the providers' REST APIs show it (for `fake-providers`).",
)
@click.option(
    "--expected-after-backfill",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the expected state once `switchboard backfill` healed the lost webhooks.",
)
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@click.pass_context
def simulate(
    ctx: click.Context,
    url: str,
    seed: int,
    calls: int | None,
    duration: float | None,
    rate: float,
    concurrency: int,
    bad_share: float,
    duplicate_share: float,
    reorder_share: float,
    span_hours: float,
    deadline: float,
    expected_path: Path | None,
    summary_json: Path | None,
    drop_share: float,
    provider_state: Path | None,
    expected_after_backfill: Path | None,
    quiet: bool,
) -> None:
    """Send a seeded, realistic busy day of Retell and Cal.com webhooks to the ingress.

    Calls (inbound/outbound, not connected, voicemail, transfers, long transcripts) with
    their bookings (requested, created, rescheduled, cancelled, rejected, no-show,
    completed), delivered with retries, duplicates, reordering and bursts. Exits 0 only if
    every good webhook was accepted, every bad one refused and every call routed right.
    """
    if calls is not None and duration is not None:
        raise click.UsageError("give --calls or --duration, not both")
    requests = None
    if duration is not None:
        if rate <= 0:
            raise click.UsageError("--duration needs a --rate above 0")
        requests = max(1, int(duration * rate))
    elif calls is None:
        calls = 200
    if (provider_state is None) != (expected_after_backfill is None):
        raise click.UsageError("give --provider-state and --expected-after-backfill together")
    if drop_share > 0 and provider_state is None:
        raise click.UsageError("--drop-share needs --provider-state and --expected-after-backfill")
    outage = None
    if provider_state is not None and expected_after_backfill is not None:
        outage = OutageFiles(provider_state, expected_after_backfill)
    config = SimulationConfig(
        scenario=ScenarioConfig(
            seed=seed,
            calls=calls,
            requests=requests,
            span_hours=span_hours,
            bad_share=bad_share,
            duplicate_share=duplicate_share,
            reorder_share=reorder_share,
            drop_share=drop_share,
        ),
        send=SendConfig(url=url, rate=rate, concurrency=concurrency, deadline_s=deadline),
        expected_path=expected_path,
        outage=outage,
    )

    def progress(p: Progress) -> None:
        click.echo(p.line(), err=True)

    summary = run_simulation(settings_from(ctx), config, on_progress=None if quiet else progress)
    for line in summary.lines():
        click.echo(line)
    if summary_json is not None:
        write_json(summary_json, summary.as_dict())
    if not summary.ok:
        raise SwitchboardError(
            f"{summary.undelivered} undelivered, {len(summary.unexpected)} unexpected answers, "
            f"{len(summary.inbound_mismatches)} wrong routing answers"
        )


@cli.command("verify-run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--api-url", help="Also check the analyst API series endpoint, e.g. http://127.0.0.1:6066."
)
@click.option(
    "--token", help="Bearer token for --api-url (default: the first SWITCHBOARD_ANALYST_TOKENS)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the pipeline to catch up before reporting.",
)
@click.option(
    "--strict-inbound",
    is_flag=True,
    help="Count missing call_inbound records as differences (the ingress answers call_inbound "
    "without waiting on Kafka, so by default they are only reported).",
)
@click.pass_context
def verify_run(
    ctx: click.Context,
    file: Path,
    api_url: str | None,
    token: str | None,
    timeout: float,
    strict_inbound: bool,
) -> None:
    """Compare MySQL (and the analyst API) with the expected state FILE written by simulate.

    Prints every difference (entity, field, expected, actual); exits 0 only when none.
    """
    settings = settings_from(ctx)
    if api_url and not token:
        token = default_token(settings)
        if not token:
            raise click.UsageError(
                "--api-url needs --token (or a plain token in SWITCHBOARD_ANALYST_TOKENS)"
            )

    def waiting(diffs: list[Difference], elapsed: float) -> None:
        click.echo(
            f"[{elapsed:5.1f}s] {len(diffs)} differences, waiting for the pipeline...", err=True
        )

    notes: list[str] = []
    diffs = verify(
        settings,
        file,
        api_url=api_url,
        token=token,
        timeout=timeout,
        on_poll=waiting,
        strict_inbound=strict_inbound,
        notes=notes,
    )
    if notes:
        click.echo(
            f"note: {len(notes)} call_inbound records are not in webhook_events (best effort: "
            "the routing answer does not wait on Kafka); --strict-inbound counts them",
            err=True,
        )
    if not diffs:
        click.echo("no differences: the pipeline's state matches the expected state")
        return
    for diff in diffs:
        click.echo(diff.line())
    click.echo(f"{len(diffs)} differences", err=True)
    sys.exit(1)


@cli.command("fake-providers")
@click.argument("state_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--retell-port", type=click.IntRange(0, 65535), default=8091, show_default=True)
@click.option("--calcom-port", type=click.IntRange(0, 65535), default=8092, show_default=True)
@click.pass_context
def fake_providers(
    ctx: click.Context, state_file: Path, host: str, retell_port: int, calcom_port: int
) -> None:
    """Serve STATE_FILE (from `simulate --provider-state`) as fake Retell and Cal.com REST
    APIs, for `switchboard backfill` (RETELL_API_URL / CALCOM_API_URL point here). They
    accept the first RETELL_API_KEY and CALCOM_API_KEY. Runs until SIGTERM or Ctrl-C."""
    import asyncio
    import signal

    import orjson

    from testbed import fake_providers as fakes

    settings = settings_from(ctx)
    retell_key, calcom_key = settings.retell_api_key(), settings.calcom_api_key
    if retell_key is None or calcom_key is None:
        raise click.UsageError("set RETELL_API_KEY and CALCOM_API_KEY: the fakes check them")
    state = fakes.State.from_document(orjson.loads(state_file.read_bytes()))

    async def serve() -> None:
        running, runners = await fakes.start(
            state,
            retell_key=retell_key.reveal(),
            calcom_key=calcom_key.reveal(),
            host=host,
            retell_port=retell_port,
            calcom_port=calcom_port,
        )
        click.echo(
            f"fake Retell API at {running.retell_url} ({len(state.calls)} calls), fake Cal.com "
            f"API at {running.calcom_url} ({len(state.bookings)} bookings)",
            err=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for runner in runners:
            await runner.cleanup()

    asyncio.run(serve())


def register() -> None:
    """The ``switchboard.plugins`` entry point: importing this module added the commands."""
