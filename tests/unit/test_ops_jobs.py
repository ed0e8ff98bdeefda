"""pipeline/ops/jobs.py: how ``replay --jobs N`` shares the partitions out, merges what the
processes report, and ends when one of them fails or dies without a word. The processes
here are stand-ins; tests/integration/test_ops_replay_jobs.py runs real ones."""

from __future__ import annotations

import pickle
import queue
from collections import Counter
from typing import Any

import pytest

from pipeline.errors import DatabaseUnavailable
from pipeline.kafka_reader import Stretch
from pipeline.ops import jobs
from pipeline.ops.report import RunReport
from pipeline.settings import Settings
from testbed.events import call_events
from testbed.records import record

LAST = record("retell", call_events("c1", start_ms=1_767_790_800_000)[0], partition=2, offset=9)


def report(read: int, applied: int, already: int, snapshots: int = 0) -> RunReport:
    out = RunReport(read=read, batches=1, snapshots_published=snapshots)
    out.counts.update({"applied": applied, "already_applied": already})
    out.changes = {"calls": {1: Counter(insert=applied)}}
    return out


class Dead:
    """A process that ended (killed) without a word."""

    exitcode = -9

    def is_alive(self) -> bool:
        return False


def test_partitions_are_dealt_round_robin_and_no_share_is_empty() -> None:
    assert jobs.split([5, 0, 3, 1, 2, 4], 2) == [[0, 2, 4], [1, 3, 5]]
    assert jobs.split([7, 7, 3], 4) == [[3], [7]]
    assert jobs.split([], 2) == []


def test_reports_merge_into_the_runs_totals() -> None:
    a, b = report(10, 2, 8, snapshots=3), report(5, 0, 5, snapshots=4)
    b.reasons[("unroutable", "unknown_agent")] += 1
    total = jobs.merged([a, b])
    assert (total.read, total.batches, total.snapshots_published) == (15, 2, 7)
    assert total.counts == Counter({"applied": 2, "already_applied": 13})
    assert total.reasons == Counter({("unroutable", "unknown_agent"): 1})
    assert total.totals_by_table() == {"calls": Counter(insert=2)}


def test_one_plan_and_one_running_total_from_every_process() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    for message in [
        ("plan", 0, 30),
        ("progress", 0, pickle.dumps((report(10, 1, 9), LAST))),
        ("plan", 1, 12),
        ("progress", 1, pickle.dumps((report(12, 0, 12), LAST))),
        ("progress", 0, pickle.dumps((report(30, 1, 29), LAST))),
        ("done", 1, pickle.dumps(report(12, 0, 12))),
        ("done", 0, pickle.dumps(report(30, 1, 29))),
    ]:
        inbox.put(message)
    plans: list[int] = []
    reads: list[int] = []
    total = jobs._collect(
        inbox,
        [object(), object()],
        [[0, 2], [1]],
        lambda r, last: reads.append(r.read),
        plans.append,
    )
    assert plans == [42]  # once both planned
    assert reads == [10, 22, 42]
    assert (total.read, total.counts["applied"]) == (42, 1)


def test_a_process_that_fails_fails_the_run_with_its_error() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    inbox.put(("error", 1, jobs._picklable(DatabaseUnavailable("MySQL is unreachable"))))
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        jobs._collect(inbox, [object(), object()], [[0], [1]], None, None)


def test_a_process_that_dies_without_a_word_is_named(monkeypatch: Any) -> None:
    monkeypatch.setattr(jobs, "POLL_S", 0.01)
    inbox: queue.Queue[Any] = queue.Queue()
    inbox.put(("done", 0, pickle.dumps(report(3, 0, 3))))
    with pytest.raises(jobs.JobFailed, match=r"partition\(s\) \[1, 3\] ended \(exit code -9\)"):
        jobs._collect(inbox, [Dead(), Dead()], [[0, 2], [1, 3]], None, None)


def test_an_error_that_cannot_travel_is_told_by_name() -> None:
    class Local(Exception):
        pass  # defined in a function: pickle cannot find it again

    travelled = pickle.loads(jobs._picklable(Local("boom")))
    assert isinstance(travelled, RuntimeError) and str(travelled) == "Local: boom"


def test_one_process_per_share_each_with_its_partitions(monkeypatch: Any) -> None:
    started: list[list[int]] = []

    class Context:
        def Queue(self) -> queue.Queue[Any]:  # noqa: N802 - multiprocessing's name
            return queue.Queue()

        def Process(self, target: Any, args: tuple[Any, ...], **_: Any) -> Any:  # noqa: N802
            index, inbox, _settings, _topic, _stretch, share = args[:6]

            class Process:
                exitcode = 0

                def start(self) -> None:
                    started.append(share)
                    done = report(len(share), 0, len(share))
                    inbox.put(("plan", index, len(share)))
                    inbox.put(("done", index, pickle.dumps(done)))

                def is_alive(self) -> bool:
                    return False

                def join(self) -> None:
                    pass

            return Process()

    monkeypatch.setattr(jobs.multiprocessing, "get_context", lambda method: Context())
    total = jobs.replay_jobs(
        Settings(), "webhooks.retell", Stretch(from_offset=0), jobs=2, partitions=[0, 1, 2]
    )
    assert started == [[0, 2], [1]]
    assert total.read == 3
