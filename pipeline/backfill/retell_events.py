"""Which Retell webhooks a call owes, and their bodies, from the call object of the REST API.

Retell's webhook body is ``{"event": ..., "call": <the call object>}``, the same object
``get-call`` returns (docs/providers.md). ``call_ended`` carries every field except
``call_analysis``; ``call_analyzed`` carries the whole call. So:

* a call with a final status and an ``end_timestamp`` owes ``call_ended``;
* a call with a ``call_analysis`` object owes ``call_analyzed``.

``call_started``, ``transcript_updated`` and the ``transfer_*`` events are not rebuilt:
everything they say about the call is in ``call_ended``/``call_analyzed`` too, which
outrank them in the apply path's merge (docs/data-model.md), so the row and the counters
are the same without them. Retell never sends ``call_started`` for a call that did not
connect anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.backfill.synthesized import Synthesized, synthesize
from pipeline.backfill.when import from_ms

FINAL_STATUSES = frozenset({"ended", "error", "not_connected"})
ENDED, ANALYZED = "call_ended", "call_analyzed"

#: Fields ``list-calls`` items leave out; only ``get-call`` has them.
TRANSCRIPT_FIELDS = frozenset(
    {
        "transcript",
        "transcript_object",
        "transcript_with_tool_calls",
        "scrubbed_transcript_with_tool_calls",
        "pre_session_transcript_with_tool_calls",
        "post_session_transcript_with_tool_calls",
        "scrubbed_pre_session_transcript_with_tool_calls",
        "scrubbed_post_session_transcript_with_tool_calls",
    }
)


def owed(call: Mapping[str, Any]) -> tuple[str, ...]:
    """The final events Retell sent (or should have sent) for ``call``, in order."""
    out = []
    end = call.get("end_timestamp")
    if (
        call.get("call_status") in FINAL_STATUSES
        and isinstance(end, int)
        and not isinstance(end, bool)
    ):
        out.append(ENDED)
        if isinstance(call.get("call_analysis"), dict):
            out.append(ANALYZED)
    return tuple(out)


def event(event_type: str, call: Mapping[str, Any]) -> Synthesized:
    """The ``event_type`` webhook of ``call``, as Retell would have sent it at the call's end.

    The analysis is only known after the end: the record's ``received_at`` is the end for
    both events (Retell sends ``call_analyzed`` seconds later; the counters bucket a call by
    its start, so the difference never moves a counter).
    """
    subject = dict(call)
    if event_type == ENDED:
        subject.pop("call_analysis", None)
    call_id = str(call["call_id"])
    return synthesize(
        "retell",
        {"event": event_type, "call": subject},
        at=from_ms(int(call["end_timestamp"])),
        subject=call_id,
        story=call_id,
        order=0 if event_type == ENDED else 1,
    )
