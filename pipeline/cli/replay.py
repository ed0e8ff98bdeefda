"""``switchboard replay``: re-apply a stretch of a webhook topic (docs/runbook.md).

Thin: parse and check the arguments (:mod:`pipeline.ops.arguments`), call
:func:`pipeline.ops.replay.replay`, print. Progress (with the stretch's size, the rate and
the time left) goes to stderr, the result to stdout, as text or ``--json``.
"""

from __future__ import annotations

from typing import Any

import click

from pipeline.cli import cli, quiet_kafka, settings_from
from pipeline.cli.output import Progress, emit, emit_json, json_option, usage
from pipeline.ops import arguments
from pipeline.ops.jobs import replay_jobs
from pipeline.ops.replay import DEFAULT_BATCH_SIZE
from pipeline.ops.report import RunReport
from pipeline.records import WebhookRecord


def batch_size_option(func: Any) -> Any:
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 10_000),
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="Records per apply transaction.",
    )(func)


def report_lines(report: RunReport) -> list[str]:
    """The text form of a replay or redrive: counts, reasons, what was written."""
    lines = [report.summary(), *report.reason_lines(), *report.change_lines()]
    if not report.dry_run:
        lines.append(
            f"published: {report.dead_letters_published} dead letter(s), "
            f"{report.snapshots_published} bucket snapshot(s)"
        )
    return lines


class RunProgress(Progress):
    """Progress that ``replay`` and ``redrive`` call with (running totals, last record)."""

    def __call__(self, report: RunReport, last: WebhookRecord) -> None:
        self.update(report.read, f"at {last.coordinates}; {report.summary()}")


@cli.command("replay")
@click.option("--topic", "topic", required=True, help="webhooks.retell or webhooks.calcom (the configured prefix is added).")  # fmt: skip
@click.option("--partition", "partition", type=int, multiple=True, help="Only this partition (repeatable); default all.")  # fmt: skip
@click.option("--from-offset", type=int, default=None, help="First offset, in each chosen partition.")  # fmt: skip
@click.option("--from-time", default=None, help="First record at or after this ISO-8601 time (UTC if no offset).")  # fmt: skip
@click.option("--to-offset", type=int, default=None, help="Last offset, inclusive (default: the end).")  # fmt: skip
@click.option("--to-time", default=None, help="Last record at or before this ISO-8601 time.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Report what would change per table and company; write nothing.")  # fmt: skip
@batch_size_option
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes replaying at once, each over its share of the partitions (each partition is read in order by one of them); 2 replays about twice as fast on a two-core machine.")  # fmt: skip
@json_option
@click.pass_context
def replay_command(
    ctx: click.Context,
    topic: str,
    partition: tuple[int, ...],
    from_offset: int | None,
    from_time: str | None,
    to_offset: int | None,
    to_time: str | None,
    dry_run: bool,
    batch_size: int,
    jobs: int,
    as_json: bool,
) -> None:
    """Re-apply a stretch of a webhook topic through the worker's apply path.

    Safe next to running workers and safe to repeat: events already applied change
    nothing, rows lost since (deleted, restored from a backup) are restored. Prints the
    counts read, applied, already applied, unroutable and dead-lettered.

    \b
    Examples:
      switchboard replay --topic webhooks.calcom --from-time 2026-01-05T01:00:00Z --dry-run
      switchboard replay --topic retell --partition 4 --from-offset 1881 --to-offset 1881
      switchboard replay --topic webhooks.retell --from-time 2026-01-05T00:00:00Z --jobs 2
    """
    with usage():
        stretch = arguments.build_stretch(
            from_offset=from_offset, from_time=from_time, to_offset=to_offset, to_time=to_time
        )
        partitions = arguments.parse_partitions(partition)
        settings = settings_from(ctx)
        full_topic = arguments.resolve_topic(settings, topic)
    progress = RunProgress("replay")
    with quiet_kafka():
        report = replay_jobs(
            settings,
            topic,
            stretch,
            jobs=jobs,
            partitions=partitions,
            dry_run=dry_run,
            batch_size=batch_size,
            on_progress=progress,
            on_plan=progress.plan,
        )
    if as_json:
        emit_json({"topic": full_topic, "partitions": partitions, **report.as_dict()})
        return
    where = "all partitions" if partitions is None else f"partition(s) {partitions}"
    emit(f"replay of {full_topic} ({where}){' [dry run: nothing written]' if dry_run else ''}")
    for line in report_lines(report):
        emit(line)
