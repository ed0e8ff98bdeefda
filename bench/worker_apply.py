"""A first apply through one real ``switchboard worker``, Kafka in the loop.

``.venv/bin/python -m bench.worker_apply [--calls N]``: the traffic simulator's records for
N calls (seeded, the mix of benchmark 1b) are produced to fresh 12-partition topics, one
worker starts on a fresh database, and its progress is read from ``webhook_events`` every
quarter second until nothing has changed for 8 s. The rate is taken between 10% and 90% of
the rows (start-up and the tail left out), in rows (events applied) and in records (what
the worker read: the simulator's retries and duplicates included), with the CPU per record
of the worker and of all cores (the worker, MariaDB and Kafka share this machine: what the
box can apply at most at that cost). The worker's own batch
histograms and snapshot counter follow: how many batches, how long, and how many bucket
snapshots they published. Not part of ``make bench``: benchmark 1b is the engine alone,
this is what one worker process does around it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

from bench import apply_mix, harness, replay_command
from bench.servers import group_cpu_seconds, machine_ticks
from pipeline import database
from pipeline.settings import Settings
from testbed import services

DEFAULTS = Settings()  # the worker's own defaults, for the options' help
QUIET_S = 8.0  # no new row for this long: the worker is done
# the worker's own counts printed with the rate: its batches, and the snapshots they published
REPORTED = (
    "switchboard_worker_batch_size_",
    "switchboard_worker_batch_seconds_",
    "switchboard_worker_snapshots_total",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_apply", description=__doc__)
    parser.add_argument("--calls", type=int, default=8000, help="simulator calls (default 8000)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"SWITCHBOARD_WORKER_BATCH_SIZE (default {DEFAULTS.worker_batch_size})",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help=f"SWITCHBOARD_WORKER_BATCHES_IN_FLIGHT (default {DEFAULTS.worker_batches_in_flight})",
    )
    parser.add_argument(
        "--apply-process",
        type=int,
        choices=(0, 1),
        default=None,
        help=f"SWITCHBOARD_WORKER_APPLY_PROCESS (default {DEFAULTS.worker_apply_process}; 1: the "
        "engine in a child process)",
    )
    args = parser.parse_args(argv)
    topics = harness.with_topics(harness.base_settings(), partitions=12)
    scoped = harness.create_database(topics).with_(worker_port=services.free_port())
    for name, value in (
        ("worker_batch_size", args.batch_size),
        ("worker_batches_in_flight", args.in_flight),
        ("worker_apply_process", args.apply_process),
    ):
        if value is not None:
            scoped = scoped.with_(**{name: value})
    engine = database.create_db_engine(scoped, pool_size=2)
    try:
        records = apply_mix.seeded_records(engine, args.calls)
        print(f"records: {len(records)} {dict(Counter(r.provider for r in records))}", flush=True)
        asyncio.run(replay_command.produce(scoped, records))
        with tempfile.TemporaryDirectory(prefix="switchboard-worker-apply-") as tmp:
            worker = services.worker(scoped, Path(tmp)).start(timeout_s=120)
            try:
                samples = _watch(engine, worker)
                url = f"http://{scoped.worker_host}:{scoped.worker_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    scraped = response.read().decode()
            finally:
                worker.stop()
        _report(samples, len(records), scraped)
    finally:
        engine.dispose()
        harness.drop_database(scoped)
        harness.delete_topics(topics)


class Sample(NamedTuple):
    at: float  # monotonic seconds
    rows: int  # webhook_events rows
    worker_cpu: float  # the worker's CPU seconds
    machine_cpu: float  # every core's busy seconds: the worker, MariaDB, Kafka, this script


def _watch(engine: sa.Engine, worker: services.Service) -> list[Sample]:
    """Samples until QUIET_S without change."""
    assert worker.proc is not None
    samples: list[Sample] = []
    last, changed = -1, time.monotonic()
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    while time.monotonic() - changed < QUIET_S:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT COUNT(*) FROM webhook_events")).scalar_one()
        busy = (machine_ticks() or (0, 0))[0] / ticks_per_s
        samples.append(
            Sample(time.monotonic(), rows, group_cpu_seconds(worker.proc.pid) or 0.0, busy)
        )
        if rows != last:
            last, changed = rows, time.monotonic()
        time.sleep(0.25)
    return samples


def _report(samples: list[Sample], records: int, scraped: str) -> None:
    total = samples[-1].rows
    low = next(s for s in samples if s.rows >= 0.1 * total)
    high = next(s for s in samples if s.rows >= 0.9 * total)
    per_row = records / total
    read = (high.rows - low.rows) * per_row  # records read between the two samples
    rows_per_s = (high.rows - low.rows) / (high.at - low.at)
    worker_us = (high.worker_cpu - low.worker_cpu) / read * 1e6
    machine_us = (high.machine_cpu - low.machine_cpu) / read * 1e6
    cores = os.cpu_count() or 1
    print(
        f"rows: {total} ({per_row:.2f} records each); between 10% and 90%: "
        f"{rows_per_s:,.0f} events/s applied = {rows_per_s * per_row:,.0f} records/s read, "
        f"worker CPU {worker_us:.0f} us per record, all cores {machine_us:.0f} us per record "
        f"({cores} cores: at most {cores / machine_us * 1e6:,.0f} records/s at this cost)"
    )
    for line in scraped.splitlines():
        if line.startswith(REPORTED) and any(s in line for s in ("_sum{", "_count{", "_total{")):
            print(line)


if __name__ == "__main__":
    main()
