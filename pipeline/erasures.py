"""The erasure list: people whose personal data Switchboard must not keep (core).

``switchboard customers erase --phone P | --email E`` removes a person's names, contact
data and transcripts from ``customers``, ``calls`` and ``appointments``, and records the
person here so that nothing brings the data back: a replay, a redrive, a provider's retry
or a late webhook about the same person goes through the apply path, which asks
:func:`erased` about the batch's phone numbers and e-mail addresses and stores their
events without the personal fields (counters are unaffected: they never depend on them).

The list holds the kind (``phone``/``email``) and the SHA-256 of the normalised value,
never the value. A hash of a phone number can be reversed by trying every number, so this
is pseudonymisation, not secrecy: the table needs the same protection as the rows it
protects, which held the plain values until the erasure.

Normalisation is what makes ``+1 (415) 555-0142`` and ``+14155550142``, or
``Dana@Example.com`` and ``dana@example.com``, the same person: phone numbers keep ``+``
and digits (``00`` becomes ``+``), e-mail addresses are NFKC-normalised and casefolded.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

from sqlalchemy import Connection, select

from pipeline.models import erasures

PHONE, EMAIL = "phone", "email"
KINDS = (PHONE, EMAIL)


def normalise_phone(text: str) -> str | None:
    """``+1 (415) 555-0142`` → ``+14155550142``; ``0049 30 555000`` → ``+4930555000``.
    None when there are no digits (or a ``+`` in the middle)."""
    kept = "".join(ch for ch in text.strip() if ch.isdigit() or ch == "+")
    if kept.startswith("00"):
        kept = "+" + kept[2:]
    digits = kept[1:] if kept.startswith("+") else kept
    if not digits.isdigit() or not digits.isascii():
        return None
    return kept


def normalise_email(text: str) -> str | None:
    """NFKC, casefolded, trimmed; None unless it looks like ``local@domain``."""
    value = unicodedata.normalize("NFKC", text).strip().casefold()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return None
    return value


def normalise(kind: str, text: str) -> str | None:
    return normalise_phone(text) if kind == PHONE else normalise_email(text)


def digest(kind: str, text: str) -> str | None:
    """The SHA-256 (hex) the list keys ``text`` by, or None if it is not a phone/e-mail."""
    value = normalise(kind, text)
    if value is None:
        return None
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def erased(
    conn: Connection,
    phones: Iterable[str | None] = (),
    emails: Iterable[str | None] = (),
    *,
    lock: bool = False,
) -> set[tuple[str, str]]:
    """Which of these phone numbers and e-mail addresses are on the erasure list, as
    ``(kind, value as given)`` pairs. One indexed query for a whole batch; ``lock`` reads
    with a shared lock (the apply path: see :mod:`pipeline.apply.privacy`)."""
    wanted: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for kind, values in ((PHONE, phones), (EMAIL, emails)):
        for value in set(values):  # a batch names the same caller again and again
            if not value:
                continue
            key = digest(kind, value)
            if key is not None:
                wanted.setdefault((kind, key), []).append((kind, value))
    if not wanted:
        return set()
    found: set[tuple[str, str]] = set()
    hashes = sorted({key for _, key in wanted})
    for start in range(0, len(hashes), 500):
        query = select(erasures.c.kind, erasures.c.value_sha256).where(
            erasures.c.value_sha256.in_(hashes[start : start + 500])
        )
        rows = conn.execute(query.with_for_update(read=True) if lock else query)
        for kind, key in rows:
            found.update(wanted.get((kind, key), []))
    return found
