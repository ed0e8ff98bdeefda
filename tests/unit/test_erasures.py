"""The erasure list's keys: one person, however their number or address is written."""

from __future__ import annotations

import hashlib

from pipeline.erasures import EMAIL, PHONE, digest, normalise_email, normalise_phone


def test_phone_numbers_in_any_formatting_are_one_key() -> None:
    forms = ["+14155550142", "+1 (415) 555-0142", " +1.415.555.0142 ", "001 415 555 0142"]
    assert {normalise_phone(f) for f in forms} == {"+14155550142"}
    assert {digest(PHONE, f) for f in forms} == {hashlib.sha256(b"phone:+14155550142").hexdigest()}
    assert normalise_phone("ask for Dana") is None
    assert normalise_phone("+1 415 +555") is None
    assert normalise_phone("+١٤١٥٥٥٥٠١٤٢") is None  # non-ASCII digits are not a number we store


def test_email_addresses_are_nfkc_casefolded() -> None:
    assert normalise_email(" Dana.Reyes@Example.COM ") == "dana.reyes@example.com"
    assert normalise_email("ｄａｎａ@example.com") == "dana@example.com"  # full-width letters
    assert normalise_email("straße@example.de") == "strasse@example.de"
    assert normalise_email("no-at-sign") is None and normalise_email("@example.com") is None
    assert digest(EMAIL, "Dana@Example.com") == digest(EMAIL, "dana@example.com")
    assert digest(EMAIL, "dana@example.com") != digest(PHONE, "dana@example.com")
