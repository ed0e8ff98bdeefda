"""Recognising, cheaply, the records of a batch that were applied before, byte for byte.

A replay of an applied stretch (or a batch redelivered after a crash) would otherwise parse
every body, lock and fold every row and find nothing to change. A record is *known* when
the ``webhook_events`` row its headers name is ``applied`` with the SHA-256 of exactly
this body. The stored row's event id was computed from that very body when it was
applied, so the headers are only a lookup key, never trusted: a record whose headers lie
does not match and goes the full way.

A latest-snapshot event (Retell's ``transcript_updated``: one event id, many bodies) has
only its first body's hash stored; its later bodies are known too once the event that
supersedes it (the call's ``call_ended``) is applied, because then a snapshot can change
nothing (the provider's ``SUPERSEDED_BY``).

A known event changes nothing, as long as the rows it stands for exist and were made no
later than the event was applied; which rows those are, the provider reads from the event
id alone (``rows_of_applied``). If one is missing (deleted by mistake, lost to a restore
from backup), or was made again since (by the replay itself, from the row's earlier
events in an earlier batch), the record goes the full way, which restores it: the repair of lost rows stays where it was. What a known event still does is
what the full way does for an already-applied event: its outcome is ``already_applied``,
and the buckets its rows count in are read back and republished unchanged (a batch
redelivered after a crash between commit and publish heals the dashboard table).

Pure: :mod:`pipeline.apply.load` reads the rows, :mod:`pipeline.apply.batch` runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from pipeline.apply.items import stored_id
from pipeline.apply.results import Outcome
from pipeline.apply.rows import ALREADY_APPLIED, APPLIED
from pipeline.dashboard import aggregates
from pipeline.dashboard.aggregates import BucketKey
from pipeline.providers import PROVIDERS
from pipeline.providers.facts import EventKey
from pipeline.providers.retell import milestone_key
from pipeline.records import WebhookRecord

CALLS, APPOINTMENTS = "calls", "appointments"

Stamp = str  # a DATETIME(3) as MySQL prints it (CAST(... AS CHAR))


class Known(NamedTuple):
    """What the recogniser needs of a stored ``webhook_events`` row. (Named tuples, here and
    for :class:`Candidate`: one is made per record of a replay, and a frozen dataclass's
    ``__init__`` costs about five times as much.)"""

    status: str
    payload_sha256: str
    event_type: str
    #: When it was applied (None: never recognised), as MySQL prints a DATETIME(3):
    #: ``2026-11-29 17:21:46.123``. Compared as text with the rows' ``created_at`` in the
    #: same format (the fixed width orders like the time): a replay reads one per record,
    #: and the driver's parsing of a datetime was a tenth of its cost.
    processed_at: Stamp | None = None


class Span(NamedTuple):
    """The stretch of one partition a batch's records come from: the range of
    ``webhook_events`` rows (by where their records sat in Kafka) read for them first."""

    topic: str
    partition: int
    first: int
    last: int


#: A partition whose records in the batch are further apart than this many offsets per
#: record (a redrive, a sample of a topic) is left to the lookup by event id: the range
#: would read every row between them.
SPARSE = 4


def spans(records: Sequence[WebhookRecord]) -> list[Span]:
    """The stretch of each partition ``records`` hold, for the range read of their rows."""
    seen: dict[tuple[str, int], list[int]] = {}
    for r in records:
        seen.setdefault((r.topic, r.partition), []).append(r.offset)
    out = []
    for (topic, partition), offsets in seen.items():
        first, last = min(offsets), max(offsets)
        if last - first < SPARSE * len(offsets):
            out.append(Span(topic, partition, first, last))
    return out


class Candidate(NamedTuple):
    """A record whose headers name an event: where it is in the batch, and its body's hash."""

    position: int
    record: WebhookRecord
    key: EventKey
    sha256: str


@dataclass
class Recognised:
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # by position in the batch
    revisited: set[BucketKey] = field(default_factory=set)  # buckets to republish

    def rest(self, count: int) -> list[int]:
        """Positions of the records that go the full way."""
        return [i for i in range(count) if i not in self.outcomes]


def candidates(records: Sequence[WebhookRecord], shas: Sequence[str]) -> list[Candidate]:
    out = []
    for position, (record, sha) in enumerate(zip(records, shas, strict=True)):
        provider, event_id = record.provider, record.headers.get("event_id")
        if provider is not None and provider in PROVIDERS and event_id:
            out.append(Candidate(position, record, (provider, stored_id(event_id)), sha))
    return out


def rows_of(provider: str, event_type: str, event_id: str) -> tuple[str, tuple[str, ...]] | None:
    """(table, ids) of the rows an applied event stands for; None: only its body says."""
    known = PROVIDERS[provider]
    ids = known.rows_of_applied(event_type, event_id)
    return None if ids is None else (known.SUBJECTS, ids)


def lookup_keys(found: Sequence[Candidate]) -> set[EventKey]:
    """The ``webhook_events`` keys to read: the records' own, and the milestones of the
    calls their headers name (whether a call's ``call_ended``/``call_analyzed`` is applied
    decides which buckets it counts in). Headers only widen this read; they decide nothing."""
    keys = {c.key for c in found}
    call_ids: set[str] = set()
    for c in found:
        rows = rows_of(c.key[0], c.record.headers.get("event_type") or "", c.key[1])
        if rows is not None and rows[0] == CALLS:
            call_ids.update(rows[1])
    return keys | milestone_keys(call_ids)


MILESTONES = ("call_ended", "call_analyzed")


def milestone_keys(call_ids: Iterable[str]) -> set[EventKey]:
    """The ``webhook_events`` keys of the calls' ``call_ended`` and ``call_analyzed``."""
    return {milestone_key(kind, call_id) for call_id in call_ids for kind in MILESTONES}


def named_calls(appointments: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The calls these bookings name (``metadata.retell_call_id``)."""
    return {ref for row in appointments.values() if (ref := row.get("retell_call_id"))}


def known_rows(found: Sequence[Candidate], known: Mapping[EventKey, Known]) -> dict[int, Any]:
    """Position → (table, ids) for every candidate that is applied with this very body, or
    is a later snapshot of a latest-snapshot event whose superseding event is applied."""
    out: dict[int, Any] = {}
    for c in found:
        stored = known.get(c.key)
        if stored is None or stored.status != APPLIED:
            continue
        same_body = stored.payload_sha256 == c.sha256
        rows = rows_of(c.key[0], stored.event_type, c.key[1])
        if rows is None and same_body:
            rows = rows_of_body(c)
        if rows is None:
            continue
        if same_body or _superseded(c.key[0], stored, rows, known):
            out[c.position] = rows
    return out


def rows_of_body(c: Candidate) -> tuple[str, tuple[str, ...]] | None:
    """(table, ids) from the body itself, for an event applied with exactly this body whose
    id does not name its rows (a reschedule touches the new and the original booking; a
    hashed id names none). Decoding the JSON is all it costs: no facts, no locks, none of
    the full way's statements for the whole batch. The provider's subjects of the body are
    every row its fold can touch, so a missing one still sends the record the full way.

    Not for calls: which buckets a call counts in depends on its milestones, which
    :func:`lookup_keys` reads for the calls the ids name (a call event with an id that names
    no call is an unknown one, rare enough to go the full way)."""
    provider = PROVIDERS[c.key[0]]
    if provider.SUBJECTS == CALLS:
        return None
    try:
        payload = orjson.loads(c.record.value)
    except orjson.JSONDecodeError:
        return None
    return provider.SUBJECTS, tuple(provider.subjects(payload, c.key[1]))


def _superseded(
    provider: str, stored: Known, rows: tuple[str, tuple[str, ...]], known: Mapping[EventKey, Known]
) -> bool:
    """Another body of a latest-snapshot event, once the event superseding it is applied."""
    final = PROVIDERS[provider].SUPERSEDED_BY.get(stored.event_type)
    if final is None or rows[0] != CALLS:
        return False
    return all(
        (s := known.get(milestone_key(final, i))) is not None and s.status == APPLIED
        for i in rows[1]
    )


def recognise(
    found: Sequence[Candidate],
    known: Mapping[EventKey, Known],
    rows: Mapping[int, tuple[str, tuple[str, ...]]],
    calls: Mapping[str, Mapping[str, Any]],
    appointments: Mapping[str, Mapping[str, Any]],
    timezones: Mapping[int, str],
) -> Recognised:
    """The outcomes of the known records whose rows all exist, and the buckets to republish.

    ``calls``/``appointments`` hold the bucket columns of the rows that exist (no locks:
    nothing is written for these records); a call's ``started_at`` is its bucket time.
    """
    out = Recognised()
    counted: set[tuple[str, str]] = set()  # rows whose buckets are in out.revisited
    for c in found:
        if c.position not in rows:
            continue
        table, ids = rows[c.position]
        subjects = calls if table == CALLS else appointments
        stored = known[c.key]
        if not all(_there_since(subjects.get(i), stored.processed_at) for i in ids):
            continue  # a row is gone, or was made again since: the full way restores it
        for i in ids:
            if (table, i) not in counted:
                counted.add((table, i))
                out.revisited |= _buckets(table, i, subjects[i], known, timezones)
                if table == APPOINTMENTS:
                    out.revisited |= _named_call_buckets(subjects[i], calls, known, timezones)
        company_id = subjects[ids[0]]["company_id"] if ids else None
        out.outcomes[c.position] = Outcome(
            provider=c.key[0],
            event_id=c.key[1],
            event_type=stored.event_type,
            status=ALREADY_APPLIED,
            company_id=company_id,
            reason=None,
            coordinates=c.record.coordinates,
            correlation_id=c.record.correlation_id,
        )
    return out


def _there_since(row: Mapping[str, Any] | None, applied_at: Stamp | None) -> bool:
    """The row exists and is the one the event was folded into: made no later than the
    event was applied. A row deleted and made again by the replay itself (by an earlier
    batch of the same stretch: a call's first events restore it, its later events sit in
    the next batch) is younger than every event it had, so each of them still goes the
    full way and the row comes back whole."""
    if row is None or applied_at is None:
        return False
    made = row.get("created_at")
    return made is not None and made <= applied_at


def _named_call_buckets(
    row: Mapping[str, Any],
    calls: Mapping[str, Mapping[str, Any]],
    known: Mapping[EventKey, Known],
    timezones: Mapping[int, str],
) -> set[BucketKey]:
    """The buckets of the call a booking names (of its own company), where the booking's
    link changed calls_booked when it was first applied."""
    call = calls.get(row.get("retell_call_id") or "")
    if call is None or call["company_id"] != row["company_id"]:
        return set()
    return _buckets(CALLS, call["retell_call_id"], call, known, timezones)


def _buckets(
    table: str,
    key: str,
    row: Mapping[str, Any],
    known: Mapping[EventKey, Known],
    timezones: Mapping[int, str],
) -> set[BucketKey]:
    """The buckets an existing row counts in (what the full way would republish)."""
    zone = timezones.get(row["company_id"])
    if table == APPOINTMENTS:
        return aggregates.appointment_buckets(row, timezone=zone)
    ended, analyzed = (
        (s := known.get(milestone_key(kind, key))) is not None and s.status == APPLIED
        for kind in MILESTONES
    )
    return set(aggregates.call_buckets(row, ended, analyzed, timezone=zone))
