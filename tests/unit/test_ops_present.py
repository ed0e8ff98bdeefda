"""What operators see: secrets hidden, phone numbers masked, transcripts truncated."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import orjson

from pipeline.ops.present import (
    HIDDEN,
    body_text,
    field_lines,
    mask_text,
    safe_headers,
    scrub,
    table,
    truncate,
)

CALLER = "+14155550142"


def test_phone_numbers_are_masked_anywhere_in_text() -> None:
    assert mask_text(f"call me on {CALLER} or +4930555000") == (
        "call me on +1415*****42 or +4930****00"
    )
    assert mask_text("+5 retries, order 1234567") == "+5 retries, order 1234567"


def test_scrub_masks_hides_and_truncates_recursively() -> None:
    body = {
        "event": "call_ended",
        "call": {
            "from_number": CALLER,
            "metadata": {"note": f"caller said {CALLER}", "api_key": "k-123"},
            "transcript": "x" * 500 + CALLER,
            "transcript_object": [{"role": "agent", "words": []}] * 3,
            "transcript_with_tool_calls": [{"role": "tool_call_invocation"}],
            "nested": [{"X-Cal-Signature-256": "abc"}, {"Authorization": "Bearer t"}],
            "cost": 21.4,
            "flag": None,
        },
    }
    out = scrub(body)
    call = out["call"]
    assert call["from_number"] == "+1415*****42"
    assert call["metadata"] == {"note": "caller said +1415*****42", "api_key": HIDDEN}
    assert call["transcript"].startswith("x" * 200) and call["transcript"].endswith(
        "(312 more characters)"
    )
    assert call["transcript_object"] == "[3 items not shown]"
    assert call["transcript_with_tool_calls"] == "[1 items not shown]"
    assert call["nested"] == [{"X-Cal-Signature-256": HIDDEN}, {"Authorization": HIDDEN}]
    assert (call["cost"], call["flag"]) == (21.4, None)
    assert CALLER not in orjson.dumps(out).decode()
    # The original is left alone.
    assert body["call"]["from_number"] == CALLER  # type: ignore[index]


def test_unmasked_shows_numbers_but_never_secrets() -> None:
    out = scrub({"from_number": CALLER, "webhook_secret": "s3cr3t"}, unmasked=True)
    assert out == {"from_number": CALLER, "webhook_secret": HIDDEN}


def test_transcript_is_masked_before_it_is_cut() -> None:
    text = "y" * 195 + CALLER  # the cut falls inside the number
    shown = scrub({"transcript": text})["transcript"]
    assert "+14155" not in shown and shown.startswith("y" * 195 + "+1415")


def test_headers_named_like_secrets_are_hidden() -> None:
    headers = {
        "provider": "retell",
        "x-retell-signature": "v=1,d=ab",
        "note": CALLER,
        "api-key": "k",
        "event_id": "call_ended:c1",
    }
    assert safe_headers(headers) == {
        "provider": "retell",
        "x-retell-signature": HIDDEN,
        "note": "+1415*****42",
        "api-key": HIDDEN,
        "event_id": "call_ended:c1",
    }


def test_body_text_pretty_prints_json_and_shows_non_json_as_text() -> None:
    shown = body_text(orjson.dumps({"call": {"from_number": CALLER}}))
    assert shown == '{\n  "call": {\n    "from_number": "+1415*****42"\n  }\n}'
    raw = body_text(b"not json " + CALLER.encode())
    assert raw == "(not JSON, 21 bytes)\nnot json +1415*****42"
    assert CALLER in body_text(b"{bad " + CALLER.encode(), unmasked=True)


def test_field_lines_are_aligned_one_per_field() -> None:
    row = {
        "id": 7,
        "from_number": CALLER,
        "started_at": datetime(2026, 1, 5, 17, 0, 0, 123000),
        "cost_cents": Decimal("21.4000"),
        "metadata": '{"clinic_id": "CL-7"}',
        "summary": "line one\nline two",
        "ended_at": None,
    }
    assert field_lines(row).splitlines() == [
        "  id           7",
        "  from_number  +1415*****42",
        "  started_at   2026-01-05T17:00:00.123Z",
        "  cost_cents   21.4000",
        '  metadata     {"clinic_id":"CL-7"}',
        "  summary      line one\\nline two",
        "  ended_at     NULL",
    ]


def test_truncate_and_table() -> None:
    assert truncate("abc", 5) == "abc"
    assert truncate("abcdefg", 5) == "abcde… (2 more characters)"
    assert table(["A", "BB"], [["x", None], ["long", 3]]).splitlines() == [
        "A     BB",
        "x     -",
        "long  3",
    ]


# --- terminal control characters (a stranger's text must not drive the terminal) ----------

HOSTILE = "Dana\x1b]0;owned\x07 \x1b[2J\x9b31m\u202eevil\r\x00"


def test_control_characters_are_shown_not_obeyed() -> None:
    from pipeline.ops.present import UNSAFE, neutralise

    shown = neutralise(HOSTILE + "\nnext\tline")
    assert not UNSAFE.search(shown)
    assert shown == (
        "Dana\\u001b]0;owned\\u0007 \\u001b[2J\\u009b31m\\u202eevil\\u000d\\u0000\nnext\tline"
    )
    assert neutralise("plain, ünïcode and emoji 📞") == "plain, ünïcode and emoji 📞"


def test_every_printed_form_is_safe_after_neutralise() -> None:
    from pipeline.ops.present import UNSAFE, json_text, neutralise

    body = orjson.dumps({"payload": {"attendees": [{"name": HOSTILE}]}})
    row = {"name": HOSTILE, "id": 1}
    for text in (
        body_text(body),
        body_text(HOSTILE.encode()),  # not JSON: shown as text
        field_lines(row),
        table(["NAME"], [[HOSTILE]]),
        field_lines(safe_headers({"x-note": HOSTILE})),
    ):
        assert not UNSAFE.search(neutralise(text)), text
    dumped = json_text({"name": HOSTILE})
    assert not UNSAFE.search(dumped)
    assert orjson.loads(dumped) == {"name": HOSTILE}  # still the same value for a script
