"""Retell bodies that tell the simulated calls, in the provider's shapes (docs/providers.md),
and the helpers every body module shares (Cal.com: ``booking_bodies``; bad traffic:
``bad_traffic``).

Pure: every random detail (Twilio sids, word timings) comes from a ``Random`` seeded by the
call's own id, so a body depends only on its call. Bodies are compact JSON with non-ASCII
left unescaped, as Retell and Cal.com send them.

Which fields each event carries is fixed here and mirrored by ``expected.py``: a connected
call's ``start_timestamp`` is in every call event; end data, cost and the final transcript
in ``call_ended`` and ``call_analyzed``; ``transfer_destination`` in the transfer events and
both of those; ``call_analysis`` only in ``call_analyzed``.
"""

from __future__ import annotations

import hashlib
from random import Random
from typing import Any

import orjson

from testbed.simulator.model import (
    CallEvent,
    SimCall,
    Step,
    Turn,
    iso_ms,
    transcript_text,
    utc,
)

OPTIONAL_CALL_FIELDS = (
    "agent_name",
    "telephony_identifier",
    "public_log_url",
    "collected_dynamic_variables",
    "latency",
    "llm_token_usage",
    "retell_llm_dynamic_variables",
)
ONGOING_EVENTS = frozenset(
    {"call_started", "transcript_updated", "transfer_started", "transfer_bridged"}
)
FINAL_EVENTS = frozenset({"call_ended", "call_analyzed"})
TRANSFER_CARRIERS = frozenset(
    {"transfer_started", "transfer_bridged", "call_ended", "call_analyzed"}
)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def iso_seconds(ms: int) -> str:
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_variant(ms: int, uid: str) -> str:
    """Cal.com writes times as ``...Z``, ``....000Z`` or ``+00:00`` depending on the path."""
    variant = hashlib.sha256(uid.encode()).digest()[0] % 3
    if variant == 0:
        return iso_seconds(ms)
    if variant == 1:
        return iso_ms(ms)
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# ---- Retell ------------------------------------------------------------------------------


def inbound_key(call_id: str) -> str:
    return f"retell:call_inbound:{call_id}"


def call_steps(call: SimCall) -> list[tuple[int, Step]]:
    """One step per event of ``call``, with the time it happens."""
    out = []
    final = final_fields(call)  # the same for call_ended and call_analyzed
    for event in call.events:
        if event.event == "call_inbound":
            body = dumps(
                {
                    "event": "call_inbound",
                    "call_inbound": {
                        "agent_id": call.agent_id,
                        "agent_version": _agent_version(call.agent_id),
                        "from_number": call.from_number,
                        "to_number": call.to_number,
                        "call_id": call.call_id,
                    },
                }
            )
            routing = None
            if call.company_id is not None and call.branch_id is not None:
                routing = (call.company_id, call.branch_id)
            step = Step(
                event.key,
                "retell",
                "call_inbound",
                call.call_id,
                body,
                200,
                unroutable=not call.routable,
                routing=routing,
            )
        else:
            body = dumps({"event": event.event, "call": call_object(call, event, final)})
            needs = inbound_key(call.call_id) if call.direction == "inbound" else None
            step = Step(
                event.key,
                "retell",
                event.event,
                f"{event.event}:{call.call_id}",
                body,
                202,
                metadata_from=needs,
                unroutable=not call.routable,
            )
        out.append((event.at_ms, step))
    return out


def _agent_version(agent_id: str) -> int:
    return hashlib.sha256(agent_id.encode()).digest()[0] % 9 + 1


def call_object(
    call: SimCall, event: CallEvent, final: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``call`` object of one event; ``final`` is ``final_fields(call)``, if at hand."""
    same = Random(call.call_id)  # details that must not change between a call's events
    name = event.event
    c: dict[str, Any] = {
        "call_id": call.call_id,
        "agent_id": call.agent_id,
        "agent_version": _agent_version(call.agent_id),
        "call_type": "phone_call",
        "call_status": "ongoing" if name in ONGOING_EVENTS else call.final_status,
        "direction": call.direction,
        "from_number": call.from_number,
        "to_number": call.to_number,
    }
    if "agent_name" not in call.omit:
        c["agent_name"] = "Front Desk"
    if call.start_ms is not None:
        c["start_timestamp"] = call.start_ms
    if "telephony_identifier" not in call.omit:
        c["telephony_identifier"] = {"twilio_call_sid": f"CA{same.getrandbits(128):032x}"}
    if call.direction == "outbound" and call.company_id is not None:
        c["metadata"] = {
            "company_id": str(call.company_id),
            "branch_id": str(call.branch_id),
            "campaign": "appointment_reminders",
        }
        if "retell_llm_dynamic_variables" not in call.omit:
            c["retell_llm_dynamic_variables"] = {"customer_name": call.customer_name}
    if call.transfer_destination is not None and name in TRANSFER_CARRIERS:
        c["transfer_destination"] = call.transfer_destination
    if name == "transcript_updated" and call.keeps_transcript:
        turns = call.turns[: event.turns]
        c["transcript"] = transcript_text(turns)
        c["transcript_with_tool_calls"] = _with_tool_calls(call, turns)
    if name in FINAL_EVENTS:
        c.update(final if final is not None else final_fields(call))
    if name == "call_analyzed":
        analysis: dict[str, Any] = {"call_summary": call.summary}
        if call.sentiment is not None:
            analysis["user_sentiment"] = call.sentiment
        analysis["call_successful"] = call.successful
        analysis["in_voicemail"] = call.in_voicemail
        analysis["custom_analysis_data"] = {"booked": bool(call.tool_calls)}
        c["call_analysis"] = analysis
    return c


def final_fields(call: SimCall) -> dict[str, Any]:
    """What ``call_ended`` and ``call_analyzed`` add: end data, transcript, recording, cost."""
    same = Random(f"{call.call_id}:final")
    c: dict[str, Any] = {}
    c["end_timestamp"] = call.end_ms
    if call.duration_ms is not None:
        c["duration_ms"] = call.duration_ms
    c["disconnection_reason"] = call.disconnection_reason
    if call.keeps_transcript and call.turns:
        c["transcript"] = transcript_text(call.turns)
        c["transcript_object"] = _with_words(call.turns, same)
        c["transcript_with_tool_calls"] = _with_tool_calls(call, call.turns)
    if call.start_ms is not None and call.storage == "everything":
        slug = call.call_id[5:17]
        c["recording_url"] = f"https://recordings.example.invalid/{slug}/recording.wav"
        c["recording_multi_channel_url"] = f"https://recordings.example.invalid/{slug}/multi.wav"
    if "public_log_url" not in call.omit:
        c["public_log_url"] = f"https://logs.example.invalid/{call.call_id}/public.log"
    if call.cost is not None:
        seconds = (call.duration_ms or 0) / 1000
        c["call_cost"] = {
            "combined_cost": float(call.cost),
            "product_costs": [
                {
                    "product": "retell_platform",
                    "unit_price": 0.07,
                    "cost": round(seconds * 0.07, 4),
                },
                {"product": "elevenlabs_tts", "unit_price": 0.04, "cost": round(seconds * 0.04, 4)},
            ],
            "total_duration_seconds": round(seconds),
            "total_duration_unit_price": 0.11,
        }
    if call.start_ms is not None:
        if "collected_dynamic_variables" not in call.omit:
            c["collected_dynamic_variables"] = {"caller_name": call.customer_name}
        if "latency" not in call.omit:
            values = sorted(same.randint(450, 1900) for _ in range(5))
            c["latency"] = {
                "e2e": {
                    "p50": values[2],
                    "p90": values[4],
                    "p95": values[4],
                    "p99": values[4],
                    "max": values[4],
                    "min": values[0],
                    "num": 5,
                    "values": values,
                }
            }
        if "llm_token_usage" not in call.omit:
            tokens = [same.randint(800, 4000) for _ in range(3)]
            c["llm_token_usage"] = {"average": sum(tokens) / 3, "num_requests": 3, "values": tokens}
    c["data_storage_setting"] = call.storage
    c["opt_in_signed_url"] = False
    return c


def _with_words(turns: tuple[Turn, ...], rng: Random) -> list[dict[str, Any]]:
    clock = 0.4
    out = []
    for turn in turns:
        words = []
        for word in turn.content.split():
            end = clock + 0.15 + rng.random() * 0.3
            words.append({"word": word, "start": round(clock, 2), "end": round(end, 2)})
            clock = end + 0.05
        clock += 0.8
        out.append({"role": turn.role, "content": turn.content, "words": words})
    return out


def _with_tool_calls(call: SimCall, turns: tuple[Turn, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        out.append({"role": turn.role, "content": turn.content, "words": []})
        for n, (after, tool, args, result) in enumerate(call.tool_calls):
            if after == index + 1:
                tc = f"tc_{n + 1:02d}"
                out.append(
                    {
                        "role": "tool_call_invocation",
                        "tool_call_id": tc,
                        "name": tool,
                        "arguments": args,
                    }
                )
                out.append(
                    {
                        "role": "tool_call_result",
                        "tool_call_id": tc,
                        "content": result,
                        "successful": True,
                    }
                )
    return out


def with_metadata(body: bytes, metadata: dict[str, Any] | None) -> bytes:
    """``body`` with ``call.metadata`` set to what our ``call_inbound`` answer said.

    Retell copies the answer's metadata onto the call; an empty answer adds nothing (Retell
    omits ``metadata`` that was never provided).
    """
    if not metadata:
        return body
    payload = orjson.loads(body)
    payload["call"]["metadata"] = metadata
    return dumps(payload)
