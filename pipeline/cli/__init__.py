"""The ``switchboard`` command line: one click group, one module per family of commands.

Every command exits non-zero with one line on stderr when its arguments are bad or Kafka or
MySQL cannot be reached, and never prints a secret. The ``worker`` command is added by the
worker entry point (``agents.main``), which is the console script, because only entry points
may import upward into ``agents``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from pipeline.errors import ConfigError, SwitchboardError
from pipeline.settings import Settings, load_settings


class SwitchboardGroup(click.Group):
    """Turns every expected failure into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"switchboard: {exc}", err=True)
            sys.exit(2)
        except SwitchboardError as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            click.echo(f"switchboard: {detail}", err=True)
            sys.exit(1)


@contextmanager
def quiet_kafka() -> Iterator[None]:
    """These commands configure no logging (their output is the point), so aiokafka's
    reconnect errors would reach stderr through logging's last-resort handler; a broker
    that stays away is reported by us in one line. Restored afterwards: the command may
    run inside another process (tests' CliRunner)."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)


def settings_from(ctx: click.Context) -> Settings:
    """Settings for this invocation, loaded once, on first use (``--help`` needs none)."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "settings" not in root.obj:
        root.obj["settings"] = load_settings(os.environ)
    settings: Settings = root.obj["settings"]
    return settings


@click.group(cls=SwitchboardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="switchboard")
def cli() -> None:
    """Switchboard: Retell and Cal.com webhooks, through Kafka, exactly once into MySQL."""


def register_commands() -> None:
    """Import the command modules (each adds its commands to ``cli``), then the plugins.

    A plugin is an installed distribution's ``switchboard.plugins`` entry point: a callable
    that adds commands to ``cli``. The testbed (``simulate``, ``verify-run``, ``tenants
    seed``) is one, so that no production module imports it.
    """
    import importlib
    from importlib.metadata import entry_points

    for name in (
        "admin",
        "tenants",
        "ingress",
        "replay",
        "dlq",
        "events",
        "status",
        "data",
        "analyst",
        "backfill",
        "doctor",
        "spool",
    ):
        importlib.import_module(f"pipeline.cli.{name}")
    for plugin in entry_points(group="switchboard.plugins"):
        plugin.load()()


def main() -> None:
    register_commands()
    cli(prog_name="switchboard")
