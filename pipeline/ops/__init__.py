"""Operations on the pipeline's history: ``replay``, ``dlq`` and ``events show``.

Plain async functions that take :class:`~pipeline.settings.Settings`, so tests call exactly
what the command line calls (``pipeline.cli`` only parses arguments and prints):

* :mod:`pipeline.ops.replay`: re-apply a stretch of a webhook topic through the same apply
  path as the worker (:class:`~pipeline.apply.applier.Applier`);
* :mod:`pipeline.ops.dlq`: read, filter and redrive dead letters;
* :mod:`pipeline.ops.lineage`: what happened to one webhook (its ``webhook_events`` row, the
  rows it touched, its raw body read back from Kafka);
* :mod:`pipeline.ops.outputs`: the Kafka producer that publishes what a real run produced
  (bucket snapshots, dead letters), exactly as the worker would;
* :mod:`pipeline.ops.arguments` and :mod:`pipeline.ops.present`: pure parsing and
  presentation (masking, truncation, tables), unit-tested without services.
"""

from __future__ import annotations

from pipeline.errors import SwitchboardError


class BadArguments(SwitchboardError):
    """The operator's arguments are inconsistent or malformed: one line, non-zero exit."""


class NotFound(SwitchboardError):
    """The thing asked for (an event, a dead letter) does not exist."""


class RecordsGone(SwitchboardError):
    """Records of the stretch were deleted (retention) while they were being read."""
