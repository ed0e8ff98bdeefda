"""Retell provider: every verification rule, parsing, event ids, and the fixtures."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, MultiDict

from pipeline import providers
from pipeline.errors import InvalidSignature, MalformedPayload
from pipeline.providers import retell
from pipeline.providers.base import sha256_hex
from tests.support.fixtures import fixture_bytes, fixture_names
from tests.support.strategies import json_value

KEY = "test-api-key"
VECTOR_BODY = b'{"event":"call_ended"}'
VECTOR_TS = 1_700_000_000_000
VECTOR_HEADER = "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"
BODY = fixture_bytes("retell", "call_ended.json")
NOW = 1_767_792_200_000
CALL_ID = "call_aaa33b1c0b1d5c6f11ed9879bb453974"

secrets_st = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(str.strip)


def code_of(headers: dict[str, str], body: bytes = BODY, secrets=(KEY,), now: int = NOW) -> str:
    with pytest.raises(InvalidSignature) as info:
        retell.verify(headers, body, list(secrets), now)
    assert info.value.status == 401
    return info.value.code


def header(ts: int, digest: str) -> dict[str, str]:
    return {"x-retell-signature": f"v={ts},d={digest}"}


def signed(body: bytes = BODY, key: str = KEY, ts: int = NOW) -> dict[str, str]:
    return retell.sign(body, key, ts)


def digest_of(headers: dict[str, str]) -> str:
    return headers[retell.SIGNATURE_HEADER].split(",d=")[1]


# --- signature -------------------------------------------------------------------------


def test_readme_test_vector_recomputed() -> None:
    assert retell.sign(VECTOR_BODY, KEY, VECTOR_TS)["x-retell-signature"] == VECTOR_HEADER
    retell.verify({"x-retell-signature": VECTOR_HEADER}, VECTOR_BODY, [KEY], VECTOR_TS)


def test_valid_signature_passes() -> None:
    assert retell.verify(signed(), BODY, [KEY], NOW) is None


@pytest.mark.parametrize("offset", [300_000, -300_000, 0, 299_999, -1])
def test_timestamp_inside_inclusive_window(offset: int) -> None:
    retell.verify(signed(ts=NOW + offset), BODY, [KEY], NOW)


@pytest.mark.parametrize("offset", [300_001, -300_001, 3_600_000, -NOW])
def test_timestamp_outside_window_is_stale(offset: int) -> None:
    """Positive offsets are stamps from the future: rejected too, as the SDK does."""
    assert code_of(signed(ts=NOW + offset)) == "stale_timestamp"


def test_absurdly_long_timestamp_is_stale_not_a_crash() -> None:
    assert code_of({"x-retell-signature": "v=" + "9" * 5000 + ",d=" + "0" * 64}) == (
        "stale_timestamp"
    )


def test_leading_zero_timestamp_verifies_like_the_sdk() -> None:
    """The SDK signs body + str(int(ts)), so zero-padded digits still verify there."""
    digest = digest_of(signed())
    retell.verify({"x-retell-signature": f"v=000{NOW},d={digest}"}, BODY, [KEY], NOW)


def test_wrong_key_is_invalid() -> None:
    assert code_of(signed(key="another-key")) == "invalid_signature"


def test_tampered_body_is_invalid() -> None:
    assert code_of(signed(), body=BODY.replace(b"user_hangup", b"agent_hangup")) == (
        "invalid_signature"
    )


def test_timestamp_is_covered_by_the_mac() -> None:
    assert code_of(header(NOW + 1, digest_of(signed()))) == "invalid_signature"


def test_empty_body_signed_verifies_but_does_not_parse() -> None:
    retell.verify(signed(body=b""), b"", [KEY], NOW)
    assert code_of(signed(), body=b"") == "invalid_signature"
    with pytest.raises(MalformedPayload):
        retell.parse(b"")


@pytest.mark.parametrize(
    "value",
    [
        VECTOR_HEADER[:-1],  # truncated digest
        "v=1700000000000",  # no digest
        "v=1700000000000,d=",  # empty digest
        VECTOR_HEADER.upper().replace("V=", "v=").replace(",D=", ",d="),  # uppercase hex
        "t=1700000000000,d=" + "0" * 64,  # wrong field name
        "d=" + "0" * 64 + ",v=1700000000000",  # reordered
        "sha256=" + VECTOR_HEADER,  # prefix
        VECTOR_HEADER + ",x=1",  # extra field
        VECTOR_HEADER + " ",  # trailing space
        " " + VECTOR_HEADER,  # leading space
        "v=1700000000000, d=" + "0" * 64,  # space after comma
        "v=-1700000000000,d=" + "0" * 64,  # signed number
        "v=1700000000000.5,d=" + "0" * 64,  # fraction
        "v=١٧٠٠٠٠٠٠٠٠٠٠٠,d=" + "0" * 64,  # non-ASCII digits (the SDK's \\d allows them)
        "v=1700000000000,d=" + "0" * 65,  # too long
        "garbage",
    ],
)
def test_malformed_header(value: str) -> None:
    assert code_of({"x-retell-signature": value}, now=VECTOR_TS) == "malformed_signature"


def test_uppercase_hex_rejected_even_when_the_mac_matches() -> None:
    h = signed()
    h["x-retell-signature"] = h["x-retell-signature"].replace(digest_of(h), digest_of(h).upper())
    assert code_of(h) == "malformed_signature"


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json"}])
def test_missing_header(headers: dict[str, str]) -> None:
    assert code_of(headers) == "missing_signature"


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_header_is_missing(value: str) -> None:
    assert code_of({"x-retell-signature": value}) == "missing_signature"


def test_repeated_header_is_refused() -> None:
    h = signed()
    md = MultiDict(h)
    md.add("X-Retell-Signature", h["x-retell-signature"])
    with pytest.raises(InvalidSignature) as info:
        retell.verify(md, BODY, [KEY], NOW)
    assert info.value.code == "malformed_signature"


@pytest.mark.parametrize("name", ["X-Retell-Signature", "X-RETELL-SIGNATURE", "x-retell-signature"])
def test_header_name_is_case_insensitive(name: str) -> None:
    value = signed()["x-retell-signature"]
    retell.verify({name: value}, BODY, [KEY], NOW)
    retell.verify(CIMultiDict({name: value}), BODY, [KEY], NOW)


@pytest.mark.parametrize("secrets", [[], [""], ["  ", ""]])
def test_no_secret_configured(secrets: list[str]) -> None:
    assert code_of(signed(), secrets=secrets) == "provider_not_configured"


def test_no_secret_configured_wins_over_missing_header() -> None:
    assert code_of({}, secrets=[]) == "provider_not_configured"


def test_bare_string_secrets_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        retell.verify(signed(), BODY, KEY, NOW)


def test_rotation_second_secret_matches() -> None:
    retell.verify(signed(key="new-key"), BODY, ["old-key", "new-key"], NOW)
    retell.verify(signed(key="old-key"), BODY, ["old-key", "new-key"], NOW)
    assert code_of(signed(key="other"), secrets=["old-key", "new-key"]) == "invalid_signature"


@given(body=st.binary(), secret=secrets_st, ts=st.integers(0, 10**15))
def test_sign_verify_round_trip(body: bytes, secret: str, ts: int) -> None:
    retell.verify(retell.sign(body, secret, ts), body, [secret], ts)


@given(body=st.binary(min_size=1), secret=secrets_st, data=st.data())
def test_any_single_byte_change_fails(body: bytes, secret: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(body) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != body[i]))
    tampered = body[:i] + bytes([new]) + body[i + 1 :]
    with pytest.raises(InvalidSignature) as info:
        retell.verify(retell.sign(body, secret, NOW), tampered, [secret], NOW)
    assert info.value.code == "invalid_signature"


# --- parsing and event ids -----------------------------------------------------------------

EXPECTED = {
    "call_started.json": ("call_started", f"call_started:{CALL_ID}", CALL_ID),
    "call_ended.json": ("call_ended", f"call_ended:{CALL_ID}", CALL_ID),
    "call_analyzed.json": ("call_analyzed", f"call_analyzed:{CALL_ID}", CALL_ID),
    "transcript_updated.json": ("transcript_updated", f"transcript_updated:{CALL_ID}", CALL_ID),
    "transfer_started.json": ("transfer_started", f"transfer_started:{CALL_ID}", CALL_ID),
    "chat_analyzed.json": ("chat_analyzed", "chat_analyzed:chat_d5cf34b6b06f", "chat_d5cf34b6b06f"),
    "call_inbound.json": (
        "call_inbound",
        "call_d51f81a19c6cecec7cbe90d98165b7bc",
        "call_d51f81a19c6cecec7cbe90d98165b7bc",
    ),
}
#: Fixtures that are not webhook requests (our answer to call_inbound): parse must refuse them.
NOT_REQUESTS = {"call_inbound_response.json"}


def test_every_fixture_is_covered() -> None:
    assert set(fixture_names("retell")) == set(EXPECTED) | NOT_REQUESTS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses(name: str) -> None:
    body = fixture_bytes("retell", name)
    env = retell.parse(body)
    assert (env.event_type, env.event_id, env.key) == EXPECTED[name]
    assert env.provider == "retell"
    assert env.payload == orjson.loads(body)
    assert retell.event_id(env.payload, body) == env.event_id


def test_response_fixture_is_not_a_webhook() -> None:
    with pytest.raises(MalformedPayload):
        retell.parse(fixture_bytes("retell", "call_inbound_response.json"))


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_call_inbound_without_call_id_falls_back_to_body_hash() -> None:
    body = dumps(
        {"event": "call_inbound", "call_inbound": {"from_number": "+1", "to_number": "+2"}}
    )
    env = retell.parse(body)
    assert env.event_id == sha256_hex(body) == env.key
    null_id = dumps(
        {
            "event": "call_inbound",
            "call_inbound": {"from_number": "+1", "to_number": "+2", "call_id": None},
        }
    )
    assert retell.parse(null_id).event_id == sha256_hex(null_id)


@pytest.mark.parametrize("extra", [{}, {"call": None}])
def test_transcript_updated_for_a_chat_uses_chat_id(extra: dict) -> None:
    env = retell.parse(
        dumps({"event": "transcript_updated", "chat": {"chat_id": "chat_1"}} | extra)
    )
    assert (env.event_id, env.key) == ("transcript_updated:chat_1", "chat_1")


def test_unknown_event_is_accepted_with_body_hash_id() -> None:
    body = dumps({"event": "call_teleported", "call": {"call_id": "call_9"}, "x": 1})
    env = retell.parse(body)
    assert (env.event_type, env.event_id, env.key) == (
        "call_teleported",
        sha256_hex(body),
        "call_9",
    )


def test_chat_inbound_is_accepted() -> None:
    body = dumps({"event": "chat_inbound", "chat_inbound": {"chat_id": "chat_7"}})
    env = retell.parse(body)
    assert (env.event_id, env.key) == (sha256_hex(body), "chat_7")


def test_extra_fields_and_event_timestamp_are_kept() -> None:
    body = dumps(
        {"event": "call_ended", "event_timestamp": 1, "call": {"call_id": "c", "new": [1]}}
    )
    assert retell.parse(body).payload["call"]["new"] == [1]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"event":"call_ended"',
        b"\xff\xfe",
        b"[]",
        b'"call_ended"',
        b"null",
        b"{}",
        b'{"event":1,"call":{"call_id":"c"}}',
        b'{"event":"","call":{"call_id":"c"}}',
        b'{"event":"call_ended"}',
        b'{"event":"call_ended","call":null}',
        b'{"event":"call_ended","call":[]}',
        b'{"event":"call_ended","call":{}}',
        b'{"event":"call_ended","call":{"call_id":7}}',
        b'{"event":"call_ended","call":{"call_id":""}}',
        b'{"event":"chat_ended","call":{"call_id":"c"}}',
        b'{"event":"chat_ended","chat":{"id":"c"}}',
        b'{"event":"call_inbound","call_inbound":{"from_number":"+1"}}',
        b'{"event":"call_inbound","call_inbound":{"to_number":"+1","from_number":5}}',
        b'{"event":"call_inbound","call_inbound":{"from_number":"+1","to_number":"+2","call_id":5}}',
        b'{"event":"call_inbound","call":{"call_id":"c"}}',
        b'{"event":"mystery"}',
    ],
)
def test_malformed_payloads(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as info:
        retell.parse(body)
    assert info.value.status == 400
    assert "\n" not in info.value.detail and info.value.detail.startswith("retell: ")


@given(st.binary())
def test_parse_of_arbitrary_bytes_never_crashes(body: bytes) -> None:
    try:
        env = retell.parse(body)
    except MalformedPayload:
        return
    assert env.event_id and env.key


@given(
    event=st.sampled_from(sorted(retell.KNOWN_EVENTS | {"call_inbound", "chat_inbound", "x"})),
    inner=st.dictionaries(
        st.sampled_from(["call_id", "chat_id", "from_number", "to_number"]), json_value, max_size=4
    ),
    holder=st.sampled_from(["call", "chat", "call_inbound", "chat_inbound"]),
)
def test_parse_of_odd_envelopes_fails_closed(event: str, inner: dict, holder: str) -> None:
    body = dumps({"event": event, holder: inner})
    try:
        env = retell.parse(body)
    except MalformedPayload:
        return
    assert isinstance(env.event_id, str) and env.event_id
    assert isinstance(env.key, str) and env.key


def test_event_id_is_lenient_on_unvalidated_payloads() -> None:
    assert retell.event_id({}, b"x") == sha256_hex(b"x")
    assert retell.event_id({"event": "call_ended", "call": "nope"}, b"y") == sha256_hex(b"y")
    assert retell.event_id({"event": "call_inbound", "call_inbound": []}, b"z") == sha256_hex(b"z")


def test_registry() -> None:
    assert providers.get("retell") is retell
    assert providers.PROVIDERS["retell"].TOPIC == "webhooks.retell"
    with pytest.raises(KeyError):
        providers.get("stripe")
