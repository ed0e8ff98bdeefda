"""The worker entry point, and the ``switchboard`` console script.

This is one of the two places that wire everything together: it imports the Faust app,
the tables and the agents explicitly (no autodiscovery) and adds the ``worker`` command to
the CLI of ``pipeline.cli``.
"""

from __future__ import annotations

import click

from pipeline.cli import cli, register_commands, settings_from


@cli.command()
@click.option("--port", type=int, default=None, help="Web port (default SWITCHBOARD_WORKER_PORT).")
@click.option("--loglevel", default="info", show_default=True)
@click.pass_context
def worker(ctx: click.Context, port: int | None, loglevel: str) -> None:
    """Run a Faust worker: agents, tables and the analyst API."""
    from agents.app import advertised_url
    from agents.worker import run_worker

    settings = settings_from(ctx)
    if port is not None:
        settings = settings.with_(worker_port=port)
    advertised_url(settings)  # refuse an unroutable URL before connecting to anything
    run_worker(settings, loglevel=loglevel)


def main() -> None:
    register_commands()
    cli(prog_name="switchboard")
