"""``switchboard status``: lag, workers, dead letters, ingress spool, freshness on one screen.

Exits 1 when Kafka or MySQL cannot be reached (after printing everything else it found),
so it also serves as a check in scripts; ``--json`` for the same as one document.
"""

from __future__ import annotations

import asyncio

import click

from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import emit, emit_json, json_option
from pipeline.ops import status as pipeline_status


@cli.command("status")
@click.option("--ingress-url", "ingress_urls", multiple=True, help="An ingress to ask (repeatable); default: SWITCHBOARD_INGRESS_HOST:PORT.")  # fmt: skip
@click.option("--worker-url", "worker_urls", multiple=True, help="A worker to ask besides those in the consumer group (repeatable).")  # fmt: skip
@click.option("--all-partitions", is_flag=True, help="List every partition, not only those with lag.")  # fmt: skip
@json_option
@click.pass_context
def status_command(
    ctx: click.Context,
    ingress_urls: tuple[str, ...],
    worker_urls: tuple[str, ...],
    all_partitions: bool,
    as_json: bool,
) -> None:
    """The pipeline at a glance: consumer lag per topic and partition, workers and their
    table recovery, dead letters pending by reason, the ingress spool, freshness (age of
    the newest applied event), unroutable events and the schema revision.

    Workers are found through the consumer group (each advertises its URL); a part that
    cannot be reached says so and the rest is still shown.
    """
    settings = settings_from(ctx)
    ingress = list(ingress_urls) or [f"http://{settings.ingress_host}:{settings.ingress_port}"]
    with quiet_kafka():
        found = asyncio.run(
            pipeline_status.gather(
                settings,
                ingress_urls=ingress,
                worker_urls=list(worker_urls),
                fallback_worker_url=f"http://{settings.worker_host}:{settings.worker_port}",
            )
        )
    if as_json:
        emit_json(found.as_dict())
    else:
        for line in pipeline_status.lines(found, all_partitions=all_partitions):
            emit(line)
    if not found.ok:
        ctx.exit(1)
