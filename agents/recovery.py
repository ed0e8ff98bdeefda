"""Faust's end of table recovery, made safe for the records it hands to the agents.

After every rebalance Faust 0.15.3 finishes table recovery
(``Recovery.on_recovery_completed``) with: resume the webhook partitions, seek them to the
committed offsets, then resume flow control, which empties every agent's queue. But by
then the consumer's flow is already running again (recovery resumed it for the changelog
partitions), so records fetched between the resume and that emptying reach an agent's
queue, count as read (the consumer's read offset moves past them), and are thrown away
with the queue. The records fetched again after the seek are then dropped as already read
("DROPPED MESSAGE ROFF" at the ``DEVLOG`` level), and no agent ever sees them: accepted
webhooks never applied, and the partition's commits stuck at the hole, or moved past its
first record by Faust's head-of-gap check. A worker that takes over a dead one's partitions
hits this most, as does a restarted worker with a backlog (docs/reliability.md).

So the consumer's flow is stopped first: nothing is fetched or queued until Faust has
sought the partitions and emptied the queues, and its last step (resume the flow) starts
reading at the committed offsets.
"""

from __future__ import annotations

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class SafeRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


class SafeTableManager(TableManager):
    """Faust's table manager with :class:`SafeRecovery` (``faust.App(TableManager=...)``)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SafeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
