"""Identifiers as keys: phone numbers and e-mail addresses normalised before they are
compared (core).

Python compares strings byte for byte; MySQL compares them by the column's collation. The
identifier columns have a binary, no-pad collation (migration 0004, docs/integrity.md), so
both agree on *equality*; this module makes values that mean the same person *equal*
before they get there: ``+1 (415) 555-0142`` and ``+14155550142 `` are one phone number,
``Dana@Example.com`` and ``dana@example.com`` one address. Without it, two bookings of one
person became two customers at best, and before the binary collation a duplicate-key
error that no retry could clear.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import phonenumbers


@lru_cache(maxsize=65536)
def normalise_phone(value: str | None) -> str | None:
    """E.164 where the number parses (an international number, ``+`` or ``00`` first);
    otherwise the value without surrounding whitespace (a number we cannot read is kept as
    sent, never guessed into a country). None for nothing.

    Cached: a pure function of its argument, and parsing a number (phonenumbers, pure
    Python) was 6% of the apply engine's time, where a call's events name its caller's
    number again and again."""
    if value is None:
        return None
    stripped = unicodedata.normalize("NFKC", value).strip()
    if not stripped:
        return None
    candidate = "+" + stripped[2:] if stripped.startswith("00") else stripped
    if candidate.startswith("+"):
        try:
            number = phonenumbers.parse(candidate, None)
        except phonenumbers.NumberParseException:
            return stripped
        if phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return stripped


def normalise_email(value: str | None) -> str | None:
    """NFKC, casefolded, without surrounding whitespace; None for nothing. The local part
    is casefolded too: providers hand back whatever the person typed, and in practice no
    mailbox differs from another by case alone."""
    if value is None:
        return None
    folded = unicodedata.normalize("NFKC", value).strip().casefold()
    return folded or None
