"""Kill -9 at a chosen point, and traces: loaded (Python imports ``sitecustomize`` at start-up) by a worker
the fault suite starts with this directory on ``PYTHONPATH`` and ``FAULT_KILL_AT=POINT:N``.
The N-th time the worker reaches POINT it sends itself SIGKILL: no clean-up, no flush, no
offset commit, exactly what a crash or an OOM kill does there. The worker's apply process
(pipeline/apply/process.py) loads this too and counts its own points: reaching one, it
kills the worker and then itself, unless ``FAULT_KILL_SCOPE=apply_process``, where only
apply processes count points and only the one that reaches it dies. Test code only; nothing in
``pipeline/`` or ``agents/`` knows about it.

The points are seams of the libraries, not of our code, so they survive refactoring:

* ``mid_batch``: a statement that inserts ``webhook_events`` rows is about to run inside the
  apply transaction (rows locked and partly written, nothing committed);
* ``after_commit``: MySQL has just committed an apply transaction; nothing of it is
  published or acked yet (the redelivery must be deduplicated);
* ``mid_publish``: a bucket snapshot is being handed to the producer after the commit
  (some snapshots of the batch sent, others not, offsets not committed).

Every worker of the fault suite loads it, with ``FAULT_TRACE=1``: a ``FAULT_TRACE: resume
drops`` line names the webhook records a Faust flow-control resume empties out of the
agents' queues after the consumer counted them as read (agents/recovery.py; the harness
fails a scenario on one). ``FAULT_SEEK_PAUSE=S`` makes the worker's seeks to the committed
offsets S seconds slower (a slow broker), which kept that window open (fault 5).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

SPEC = os.environ.get("FAULT_KILL_AT", "")
#: ``worker`` (default): the worker dies, with its apply process; ``apply_process``: only the
#: apply process dies, at the points it reaches (the worker replaces it).
SCOPE = os.environ.get("FAULT_KILL_SCOPE", "worker")


def _in_apply_process() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is not None


def _die(point: str) -> None:
    sys.stderr.write(f"FAULT_KILL_AT: SIGKILL at {point}\n")
    sys.stderr.flush()
    if SCOPE == "worker" and _in_apply_process():
        os.kill(os.getppid(), signal.SIGKILL)  # the worker first: its child dies with it
    os.kill(os.getpid(), signal.SIGKILL)


def _install(point: str, nth: int) -> None:
    seen = [0]

    def reached() -> None:
        # (asked here, not at start-up: multiprocessing says who is a child only later)
        if SCOPE == "apply_process" and not _in_apply_process():
            return
        seen[0] += 1
        if seen[0] == nth:
            _die(f"{point} #{nth}")

    if point == "mid_batch":
        import pymysql.cursors

        execute = pymysql.cursors.Cursor.execute

        def patched_execute(self: Any, query: Any, args: Any = None) -> Any:
            text = query.decode(errors="replace") if isinstance(query, bytes) else str(query)
            if text.lstrip()[:40].upper().startswith("INSERT INTO WEBHOOK_EVENTS"):
                reached()
            return execute(self, query, args)

        pymysql.cursors.Cursor.execute = patched_execute  # type: ignore[method-assign]
    elif point == "after_commit":
        import pymysql.connections

        commit = pymysql.connections.Connection.commit

        def patched_commit(self: Any) -> None:
            commit(self)
            reached()

        pymysql.connections.Connection.commit = patched_commit  # type: ignore[method-assign]
    elif point == "mid_publish":
        import aiokafka.producer

        send = aiokafka.producer.AIOKafkaProducer.send

        async def patched_send(self: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
            if topic.endswith("switchboard-bucket-snapshots"):
                reached()
            return await send(self, topic, *args, **kwargs)

        aiokafka.producer.AIOKafkaProducer.send = patched_send  # type: ignore[method-assign]
    else:
        raise SystemExit(f"FAULT_KILL_AT: unknown point {point!r}")


def _trace_flow_control_resumes() -> None:
    """``FAULT_TRACE=1``: a line for the webhook records a flow-control resume throws out of
    the agents' queues (Faust empties them on resume; the records were counted as read, so
    no agent would ever see them: the defect agents/recovery.py fixes)."""
    import mode.utils.queues

    resume = mode.utils.queues.FlowControlEvent.resume

    def traced_resume(self: Any) -> None:
        dropped = []
        for queue in list(self._queues):
            for item in list(getattr(queue, "_queue", ())):
                message = getattr(item, "message", None)
                if message is not None and ".webhooks." in f".{message.topic}":
                    dropped.append(f"{message.topic}/{message.partition}@{message.offset}")
        if dropped:
            sys.stderr.write(f"FAULT_TRACE: resume drops {len(dropped)} records: {dropped}\n")
            sys.stderr.flush()
        resume(self)

    mode.utils.queues.FlowControlEvent.resume = traced_resume  # type: ignore[method-assign]


def _pause_after_seek(seconds: float) -> None:
    """``FAULT_SEEK_PAUSE=S``: Faust's seek of the partitions to their committed offsets
    takes S seconds longer (a slow broker answering the committed offsets), which widens
    the window in which Faust 0.15.3 fetched records it then threw away."""
    import asyncio

    import faust.transport.consumer

    perform_seek = faust.transport.consumer.Consumer.perform_seek

    async def slow_seek(self: Any) -> None:
        await perform_seek(self)
        await asyncio.sleep(seconds)

    faust.transport.consumer.Consumer.perform_seek = slow_seek  # type: ignore[method-assign]


if SPEC:
    _point, _, _nth = SPEC.partition(":")
    _install(_point, int(_nth or "1"))
if os.environ.get("FAULT_TRACE"):
    _trace_flow_control_resumes()
if os.environ.get("FAULT_SEEK_PAUSE"):
    _pause_after_seek(float(os.environ["FAULT_SEEK_PAUSE"]))
