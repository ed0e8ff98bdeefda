"""The erasure list in the apply path: nothing personal is stored about an erased person.

``switchboard customers erase`` removes a person's data and puts a hash of their phone
number or e-mail address on the erasure list (:mod:`pipeline.erasures`). Every batch asks
the list about the people its events name (a call's customer number, a booking's attendee
phone and e-mail) before it loads or locks anything, and folds the events of listed people
without their personal facts: no customer (name, phone, e-mail), no customer-side number,
transcript, summary, recording URL or free-form metadata on the call, no title or
cancellation reason on the booking. What the dashboard counts (direction, times, duration,
cost, status, outcome, sentiment, links) and what attributes the event (the business
number, the agent, our own routing ids in the metadata, the event type) stay, so the
counters are exact and a replay, a redrive, a provider's retry or the person's next call is
applied like any other, only anonymously.

The list is read with a shared lock: an erasure inserts its entry first, so it waits for
the batches that read the list before it, and a batch that starts later waits for the
erasure to commit and then sees the entry; the batch takes the lock before any row lock,
so the two never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from pipeline.apply.items import Item
from pipeline.erasures import EMAIL, PHONE, erased
from pipeline.providers.facts import BookingFacts, CallFacts

#: Metadata keys kept for an erased person's call: our call_inbound answer's routing ids.
ROUTING_KEYS = ("company_id", "branch_id")


def scrub(conn: Connection, items: Sequence[Item]) -> list[Item]:
    """``items``, those about people on the erasure list without their personal facts."""
    phones: list[str | None] = []
    emails: list[str | None] = []
    for item in items:
        if isinstance(item.facts, CallFacts):
            phones.append(item.facts.customer_number)
        elif isinstance(item.facts, BookingFacts):
            phones.append(item.facts.attendee_phone)
            emails.append(item.facts.attendee_email)
    if not any(phones) and not any(emails):
        return list(items)
    listed = erased(conn, phones, emails, lock=True)
    if not listed:
        return list(items)
    return [_anonymous(item, listed) for item in items]


def _anonymous(item: Item, listed: set[tuple[str, str]]) -> Item:
    facts = item.facts
    if isinstance(facts, CallFacts):
        number = facts.customer_number
        if number is None or (PHONE, number) not in listed:
            return item
        side = "to_number" if facts.direction == "outbound" else "from_number"
        changes: dict[str, Any] = {
            side: None,
            "transcript": None,
            "summary": None,
            "recording_url": None,
            "metadata": _routing(facts.metadata),
        }
        return replace(item, facts=replace(facts, **changes))
    if isinstance(facts, BookingFacts):
        phone, email = facts.attendee_phone, facts.attendee_email
        if not ((phone and (PHONE, phone) in listed) or (email and (EMAIL, email) in listed)):
            return item
        anonymous = replace(
            facts,
            attendee_phone=None,
            attendee_email=None,
            attendee_name=None,
            title=None,
            cancellation_reason=None,
        )
        return replace(item, facts=anonymous)
    return item


def _routing(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    kept = {k: metadata[k] for k in ROUTING_KEYS if metadata and k in metadata}
    return kept or None
