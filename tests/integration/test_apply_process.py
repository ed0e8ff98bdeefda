"""The worker's apply process against the real MariaDB (pipeline/apply/process.py): a batch
is applied by the child exactly as in the worker's own threads, the child's copy of the
published-bucket memory follows the worker's (remember, forget), and a child killed between
batches is replaced without losing the next one."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import pytest
from sqlalchemy import Engine

from pipeline.apply.applier import Applier
from pipeline.apply.process import ApplyProcess
from pipeline.settings import Settings
from tests.support.fixtures import retell_calls
from tests.support.state import statuses

pytestmark = pytest.mark.usefixtures("fixture_tenants")


def child_pids() -> list[int]:
    import multiprocessing

    return [p.pid for p in multiprocessing.active_children() if p.pid is not None]


async def test_the_apply_process_applies_and_follows_the_memory(
    db_settings: Settings, engine: Engine
) -> None:
    restarts: list[int] = []
    process = ApplyProcess(db_settings, on_restart=lambda: restarts.append(1))
    applier = Applier(engine, process=process)
    records = retell_calls(20, tag="process", event="call_ended")
    try:
        first = await applier.apply(records)
        assert first.counts() == Counter({"applied": 20})
        assert first.snapshots, "a batch that counts publishes its buckets"
        keys = {s.key for s in first.snapshots}
        # Nothing remembered yet: an already-applied copy republishes every bucket.
        again = await applier.apply(records)
        assert again.counts() == Counter({"already_applied": 20})
        assert {s.key for s in again.snapshots} == keys
        # Remembered in the worker: the child, told so with the next batch, skips them ...
        applier.published.remember(keys, applier.published.epoch)
        assert (await applier.apply(records)).snapshots == []
        # ... until the worker forgets (a rebalance).
        applier.published.forget()
        assert {s.key for s in (await applier.apply(records)).snapshots} == keys

        # The child killed between batches: the next batch goes to a new one.
        (pid,) = child_pids()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        more = retell_calls(25, tag="process", event="call_ended")[20:]
        assert (await applier.apply(more)).counts() == Counter({"applied": 5})
        assert restarts == [1]
    finally:
        await asyncio.to_thread(process.close)
    assert statuses(engine) == Counter({"applied": 25})
    assert child_pids() == []
