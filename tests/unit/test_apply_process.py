"""The engine's child process (pipeline/apply/process.py): what it raises crosses the
process boundary intact, a child that dies is replaced and its batch sent again once, and
a batch that kills two children comes back as a bug (the Applier isolates it) instead of
stopping the stream for ever. No database here: the children run stand-ins."""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.apply import process
from pipeline.apply.process import ApplyFailed, ApplyProcess, _Reply
from pipeline.apply.published import News, PublishedBuckets
from pipeline.apply.results import BatchResult
from pipeline.dashboard.aggregates import BucketKey
from pipeline.database import DbFailure, Kind
from pipeline.errors import DatabaseUnavailable
from pipeline.records import WebhookRecord
from pipeline.settings import Secret, Settings


def marked(path: Path) -> list[WebhookRecord]:
    """A batch whose one record names a file: the stand-ins below die while it is absent."""
    return [WebhookRecord("webhooks.retell", 0, 7, str(path).encode(), b"{}")]


def dies_while_unmarked(records: Sequence[WebhookRecord], dry_run: bool, news: News) -> _Reply:
    """In the child: die the first time (leaving the mark), apply the second."""
    path = Path(records[0].key.decode())  # type: ignore[union-attr]
    if not path.exists():
        path.touch()
        os._exit(9)
    return _Reply(BatchResult(created_uids={"applied"}), retries=[("mysql_1213_deadlock", 0.1)])


_applied_here = [0]  # in a child: the batches it was given


def dies_on_its_second_batch(records: Sequence[WebhookRecord], dry_run: bool, news: News) -> _Reply:
    _applied_here[0] += 1
    if _applied_here[0] == 2:
        os._exit(9)
    return _Reply(BatchResult(created_uids={records[0].key.decode()}))  # type: ignore[union-attr]


def always_dies(records: Sequence[WebhookRecord], dry_run: bool, news: News) -> _Reply:
    os._exit(9)


def test_what_the_child_raises_crosses_intact() -> None:
    waiting = DatabaseUnavailable("read only", reason="mysql_1290_read_only", busy=False)
    bug = ApplyFailed("KeyError in the apply process", DbFailure(Kind.UNKNOWN, "unknown"))
    again = pickle.loads(pickle.dumps(_Reply(None, [], waiting))).error
    assert isinstance(again, DatabaseUnavailable)
    assert (again.reason, again.busy, str(again)) == ("mysql_1290_read_only", False, "read only")
    back = pickle.loads(pickle.dumps(bug))
    assert (type(back), back.failure, str(back)) == (ApplyFailed, bug.failure, str(bug))


def test_a_database_that_does_not_answer_comes_back_as_a_wait(tmp_path: Path) -> None:
    """``_apply`` as the child runs it, against a port nothing listens on."""
    settings = Settings(database_url=Secret("mysql+pymysql://sb:x@127.0.0.1:9/none"))
    process._open(settings)
    try:
        reply = process._apply(marked(tmp_path / "x"), False, News((0, 0), frozenset()))
    finally:
        assert process._child is not None
        process._child.engine.dispose()
        process._child = None
    error = pickle.loads(pickle.dumps(reply)).error
    assert isinstance(error, DatabaseUnavailable)
    assert error.reason.startswith("mysql_2003") or error.reason == "connection_lost"


def test_a_child_that_dies_is_replaced_and_the_batch_sent_again(tmp_path: Path) -> None:
    restarts: list[int] = []
    retries: list[tuple[str, float]] = []
    worker = ApplyProcess(
        Settings(), on_restart=lambda: restarts.append(1), target=dies_while_unmarked
    )
    memory = PublishedBuckets()
    memory.remember([BucketKey(1, "hour", datetime(2026, 1, 7, 9))], memory.epoch)
    try:
        result = asyncio.run(
            worker.apply(
                marked(tmp_path / "mark"),
                published=memory,
                on_retry=lambda r, d: retries.append((r, d)),
            )
        )
    finally:
        worker.close()
    assert result.created_uids == {"applied"}  # the second child applied it
    assert restarts == [1]
    assert retries == [("mysql_1213_deadlock", 0.1)]  # the child's retries are counted here
    # It may have died after a commit: what was published is forgotten (republished later).
    assert (memory.epoch, len(memory)) == (1, 0)


def test_a_batch_that_kills_two_children_is_a_bug_not_a_wait(tmp_path: Path) -> None:
    worker = ApplyProcess(Settings(), target=always_dies)
    try:
        with pytest.raises(ApplyFailed) as failed:
            asyncio.run(worker.apply(marked(tmp_path / "x"), published=PublishedBuckets()))
    finally:
        worker.close()
    assert failed.value.failure.reason == "process_died"


def test_a_stopped_process_makes_batches_wait_instead_of_failing() -> None:
    worker = ApplyProcess(Settings(), target=always_dies)
    worker.close()
    with pytest.raises(DatabaseUnavailable) as waiting:
        asyncio.run(worker.apply([], published=PublishedBuckets()))
    assert waiting.value.reason == "shutting_down"


def test_a_batch_waiting_its_turn_does_not_share_the_death_of_another(tmp_path: Path) -> None:
    """Each batch kills the first child that applies it. Queued behind the first in the
    child's pool, the second would count that death too and, killing the next child
    itself, die "twice": isolated, its records dead-lettered as bugs (the fault suite's
    apply-process kills found it). Waiting its turn in the worker, it dies once."""
    batches = [marked(tmp_path / "first"), marked(tmp_path / "second")]
    results, restarts = side_by_side(dies_while_unmarked, batches)
    assert [r.created_uids for r in results] == [{"applied"}, {"applied"}]
    assert restarts == [1, 1]


def test_the_batch_sent_again_is_the_new_childs_first() -> None:
    """Every child dies on the second batch it is given. The batch a child died on must be
    the next child's first (it keeps its turn), or it would die again with the next child
    and count as a bug."""
    batches = [[WebhookRecord("t", 0, n, name.encode(), b"{}")] for n, name in enumerate("abc")]
    results, restarts = side_by_side(dies_on_its_second_batch, batches)
    assert [r.created_uids for r in results] == [{"a"}, {"b"}, {"c"}]
    assert restarts == [1, 1]


def side_by_side(
    target: Callable[[Sequence[WebhookRecord], bool, News], _Reply],
    batches: list[list[WebhookRecord]],
) -> tuple[list[BatchResult], list[int]]:
    """Apply ``batches`` at once through a new apply process running ``target``: their
    results, and a 1 per child it replaced."""
    restarts: list[int] = []
    worker = ApplyProcess(Settings(), on_restart=lambda: restarts.append(1), target=target)
    memory = PublishedBuckets()

    async def all_of_them() -> list[BatchResult]:
        return await asyncio.gather(*(worker.apply(b, published=memory) for b in batches))

    try:
        return asyncio.run(all_of_them()), restarts
    finally:
        worker.close()


def waits_for_its_file(records: Sequence[WebhookRecord], dry_run: bool, news: News) -> _Reply:
    """In the child: apply once the file the record names exists."""
    path = Path(records[0].key.decode())  # type: ignore[union-attr]
    while not path.exists():
        time.sleep(0.01)
    return _Reply(BatchResult(created_uids={path.name}))


@pytest.mark.parametrize("depth", [1, 2])
def test_the_child_holds_the_next_batch_while_it_applies_one(tmp_path: Path, depth: int) -> None:
    """With ``depth`` 2 the next batch is already in the child's hands (it does not wait
    for the worker between two batches); never more, so a death takes back at most that."""
    worker = ApplyProcess(Settings(), target=waits_for_its_file, depth=depth)
    batches = [marked(tmp_path / name) for name in "abc"]
    held: list[int] = []

    async def watch_then_release() -> list[BatchResult]:
        memory = PublishedBuckets()
        applying = [asyncio.ensure_future(worker.apply(b, published=memory)) for b in batches]
        for _ in range(300):  # the child's start (a spawn) included
            held.append(len(worker._sent))
            await asyncio.sleep(0.01)
        for name in "abc":
            (tmp_path / name).touch()
        return await asyncio.gather(*applying)

    try:
        results = asyncio.run(watch_then_release())
    finally:
        worker.close()
    assert [r.created_uids for r in results] == [{"a"}, {"b"}, {"c"}]
    assert max(held) == depth


def dies_after_its_reply(records: Sequence[WebhookRecord], dry_run: bool, news: News) -> _Reply:
    """In the child: answer, then die a moment later, between this batch and the next."""
    threading.Timer(0.05, os._exit, args=(9,)).start()
    return _Reply(BatchResult(created_uids={records[0].key.decode()}))  # type: ignore[union-attr]


def test_a_child_that_died_between_two_batches_is_replaced_for_the_next() -> None:
    """The pool refuses the next batch at once (its child is gone): a death like any other,
    never a bug that would isolate the batch into dead letters."""
    restarts: list[int] = []
    worker = ApplyProcess(
        Settings(), on_restart=lambda: restarts.append(1), target=dies_after_its_reply
    )
    batches = [[WebhookRecord("t", 0, n, name.encode(), b"{}")] for n, name in enumerate("ab")]

    async def one_then_the_other() -> list[BatchResult]:
        memory = PublishedBuckets()
        first = await worker.apply(batches[0], published=memory)
        await asyncio.sleep(1.0)  # the child is gone, and the pool knows it
        return [first, await worker.apply(batches[1], published=memory)]

    try:
        results = asyncio.run(one_then_the_other())
    finally:
        worker.close()
    assert [r.created_uids for r in results] == [{"a"}, {"b"}]
    assert restarts == [1]
