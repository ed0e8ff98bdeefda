"""``switchboard replay --jobs N``: a stretch replayed by several processes at once, each over
its share of the topic's partitions.

One process applies a batch at a time: it waits for MySQL, then works in Python, never both,
so on a machine with a core to spare, a second process doubles the rate (docs/benchmarks.md,
1b and 1c). Splitting by partition keeps what makes a replay safe: every partition is read
in order by exactly one process, as a worker reads it, and each process is the single-job
replay of :mod:`pipeline.ops.replay` over its partitions (its own consumer, database
connections and publisher). Events of one call or booking share a partition (their key);
what two processes may touch at once (a customer, a bucket) is locked and merged by the
apply path exactly as it is for two workers.

The parent only plans and counts: it splits the partitions, starts the processes
(``spawn``: no state shared with the parent's event loop or connections), merges their
progress into one line and their totals into one report. A process that fails stops the
others, and its error is the run's, so the command ends as a single-job run would; a process
that dies without a word (killed) is named with its partitions.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import queue as queues
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.errors import SwitchboardError
from pipeline.kafka_reader import Stretch
from pipeline.ops.arguments import resolve_topic
from pipeline.ops.replay import DEFAULT_BATCH_SIZE, Progress, replay
from pipeline.ops.report import RunReport
from pipeline.ops.stretch import topic_partitions
from pipeline.settings import Settings

#: Seconds between checks that every process is still alive while none reports.
POLL_S = 1.0


class JobFailed(SwitchboardError):
    """A replay process ended without reporting its totals or an error (killed)."""


def split(partitions: Iterable[int], jobs: int) -> list[list[int]]:
    """Partitions dealt round-robin to at most ``jobs`` processes (none gets an empty share)."""
    chosen = sorted(set(partitions))
    return [share for i in range(jobs) if (share := chosen[i::jobs])]


def replay_jobs(
    settings: Settings,
    topic: str,
    stretch: Stretch,
    *,
    jobs: int,
    partitions: Iterable[int] | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Progress | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> RunReport:
    """Replay ``stretch`` of ``topic`` in ``jobs`` processes; the merged totals. With one
    job, or one partition to read, it is :func:`~pipeline.ops.replay.replay` in this
    process."""

    def here(chosen: Iterable[int] | None) -> RunReport:
        return asyncio.run(
            replay(
                settings,
                topic,
                stretch,
                partitions=chosen,
                dry_run=dry_run,
                batch_size=batch_size,
                on_progress=on_progress,
                on_plan=on_plan,
            )
        )

    if jobs <= 1:
        return here(partitions)
    if partitions is None:
        partitions = asyncio.run(topic_partitions(settings, resolve_topic(settings, topic)))
    shares = split(partitions, jobs)
    if len(shares) <= 1:
        return here(shares[0] if shares else [])
    context = multiprocessing.get_context("spawn")
    inbox: Any = context.Queue()
    processes = [
        context.Process(
            target=_job,
            args=(index, inbox, settings, topic, stretch, share, dry_run, batch_size),
            name=f"switchboard-replay-{index}",
            daemon=True,
        )
        for index, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    try:
        return _collect(inbox, processes, shares, on_progress, on_plan)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()


def _collect(
    inbox: Any,
    processes: list[Any],
    shares: list[list[int]],
    on_progress: Progress | None,
    on_plan: Callable[[int], None] | None,
) -> RunReport:
    running: dict[int, RunReport] = {}
    planned: dict[int, int] = {}
    done: dict[int, RunReport] = {}
    silent: set[int] = set()  # ended without a word at the last poll
    while len(done) < len(processes):
        try:
            kind, index, payload = inbox.get(timeout=POLL_S)
        except queues.Empty:
            # An ended process's last words may still be in the pipe: fail at the second
            # quiet poll after it ended, not the first.
            ended = {i for i, p in enumerate(processes) if i not in done and p.exitcode is not None}
            if dead := ended & silent:
                index = min(dead)
                raise JobFailed(
                    f"the replay process of partition(s) {shares[index]} ended "
                    f"(exit code {processes[index].exitcode}) before it finished"
                ) from None
            silent = ended
            continue
        if kind == "error":
            raise pickle.loads(payload)
        if kind == "plan":
            planned[index] = payload
            if on_plan is not None and len(planned) == len(processes):
                on_plan(sum(planned.values()))
        elif kind == "progress":
            running[index], last = pickle.loads(payload)
            if on_progress is not None:
                on_progress(merged(running.values()), last)
        elif kind == "done":
            done[index] = running[index] = pickle.loads(payload)
    return merged(done[i] for i in range(len(processes)))


def merged(reports: Iterable[RunReport]) -> RunReport:
    out = RunReport()
    for report in reports:
        out.merge(report)
    return out


def _job(
    index: int,
    inbox: Any,
    settings: Settings,
    topic: str,
    stretch: Stretch,
    partitions: list[int],
    dry_run: bool,
    batch_size: int,
) -> None:
    """One process's replay. What it sends is pickled at once: the report it passes on
    keeps changing while the queue's feeder thread would still be pickling it."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)  # as the command's
    try:
        report = asyncio.run(
            replay(
                settings,
                topic,
                stretch,
                partitions=partitions,
                dry_run=dry_run,
                batch_size=batch_size,
                on_progress=lambda r, last: inbox.put(("progress", index, pickle.dumps((r, last)))),
                on_plan=lambda total: inbox.put(("plan", index, total)),
            )
        )
    except BaseException as exc:  # noqa: BLE001 - any failure is the run's, in the parent
        inbox.put(("error", index, _picklable(exc)))
        return
    inbox.put(("done", index, pickle.dumps(report)))


def _picklable(exc: BaseException) -> bytes:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - an exception that does not travel: say what it was
        return pickle.dumps(RuntimeError(f"{exc.__class__.__name__}: {exc}"))
