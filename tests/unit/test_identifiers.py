"""Keys normalised before they are compared (issue 12, defect 1)."""

from __future__ import annotations

import pytest

from pipeline.identifiers import normalise_email, normalise_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550142", "+14155550142"),
        ("+14155550142 ", "+14155550142"),
        (" +1 (415) 555-0142", "+14155550142"),
        ("0049 30 555000", "+4930555000"),
        ("\uff0b14155550142", "+14155550142"),  # full-width plus (NFKC)
        ("4155550142", "4155550142"),  # no country: kept as sent, never guessed
        ("ext. 12", "ext. 12"),
        ("   ", None),
        (None, None),
    ],
)
def test_phone(raw: str | None, expected: str | None) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dana@Example.com", "dana@example.com"),
        (" dana@example.COM ", "dana@example.com"),
        ("STRASSE@example.de", "strasse@example.de"),
        ("ﬀ@example.com", "ff@example.com"),  # NFKC ligature
        ("", None),
        (None, None),
    ],
)
def test_email(raw: str | None, expected: str | None) -> None:
    assert normalise_email(raw) == expected
