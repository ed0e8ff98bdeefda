"""Kill -9 at a chosen point: loaded (Python imports ``sitecustomize`` at start-up) by a worker
the fault suite starts with this directory on ``PYTHONPATH`` and ``FAULT_KILL_AT=POINT:N``.
The N-th time the worker reaches POINT it sends itself SIGKILL: no clean-up, no flush, no
offset commit, exactly what a crash or an OOM kill does there. Test code only; nothing in
``pipeline/`` or ``agents/`` knows about it.

The points are seams of the libraries, not of our code, so they survive refactoring:

* ``mid_batch``: a statement that inserts ``webhook_events`` rows is about to run inside the
  apply transaction (rows locked and partly written, nothing committed);
* ``after_commit``: MySQL has just committed an apply transaction; nothing of it is
  published or acked yet (the redelivery must be deduplicated);
* ``mid_publish``: a bucket snapshot is being handed to the producer after the commit
  (some snapshots of the batch sent, others not, offsets not committed).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

SPEC = os.environ.get("FAULT_KILL_AT", "")


def _die(point: str) -> None:
    sys.stderr.write(f"FAULT_KILL_AT: SIGKILL at {point}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install(point: str, nth: int) -> None:
    seen = [0]

    def reached() -> None:
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


if SPEC:
    _point, _, _nth = SPEC.partition(":")
    _install(_point, int(_nth or "1"))
