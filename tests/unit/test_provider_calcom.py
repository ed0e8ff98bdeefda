"""Cal.com provider: every verification rule, parsing, event ids, and the fixtures."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, MultiDict

from pipeline import providers
from pipeline.errors import InvalidSignature, MalformedPayload
from pipeline.providers import calcom
from pipeline.providers.base import sha256_hex
from tests.support.fixtures import fixture_bytes, fixture_names
from tests.support.strategies import json_leaf

SECRET = "cal-test-secret"
VECTOR_BODY = (
    b'{"triggerEvent":"BOOKING_CREATED","createdAt":"2026-03-02T15:04:05.000Z",'
    b'"payload":{"uid":"bk_7Yt2"}}'
)
VECTOR_SIG = "90a49648ebaa142876bc0e146f9b0084cdf4085b8b5303738ffe60a64bbf7e0d"
BODY = fixture_bytes("calcom", "BOOKING_CREATED.json")
NOW = 1_767_632_531_482
HDR = "X-Cal-Signature-256"

secrets_st = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(str.strip)


def code_of(headers: dict[str, str], body: bytes = BODY, secrets=(SECRET,)) -> str:
    with pytest.raises(InvalidSignature) as info:
        calcom.verify(headers, body, list(secrets), NOW)
    assert info.value.status == 401
    return info.value.code


def signed(body: bytes = BODY, key: str = SECRET) -> dict[str, str]:
    return calcom.sign(body, key, NOW)


# --- signature -------------------------------------------------------------------------


def test_readme_test_vector_recomputed() -> None:
    assert calcom.sign(VECTOR_BODY, SECRET, 0)[HDR] == VECTOR_SIG
    assert hmac.new(SECRET.encode(), VECTOR_BODY, hashlib.sha256).hexdigest() == VECTOR_SIG
    calcom.verify({HDR: VECTOR_SIG}, VECTOR_BODY, [SECRET], NOW)


def test_valid_signature_passes_and_sign_sends_cal_headers() -> None:
    h = signed()
    assert h["X-Cal-Webhook-Version"] == "2021-10-20"
    assert h["Content-Type"] == "application/json"
    assert calcom.verify(h, BODY, [SECRET], NOW) is None


def test_no_replay_window_because_cal_signs_no_time() -> None:
    """Documented behaviour, pinned so nobody adds a window Cal.com cannot satisfy."""
    calcom.verify(signed(), BODY, [SECRET], NOW + 10 * 365 * 86_400_000)


def test_wrong_key_is_invalid() -> None:
    assert code_of(signed(key="other-secret")) == "invalid_signature"


def test_tampered_body_is_invalid() -> None:
    assert code_of(signed(), body=BODY.replace(b"Marisol", b"Marisel")) == "invalid_signature"


def test_empty_body_signed_verifies_but_does_not_parse() -> None:
    calcom.verify(signed(body=b""), b"", [SECRET], NOW)
    assert code_of(signed(), body=b"") == "invalid_signature"
    with pytest.raises(MalformedPayload):
        calcom.parse(b"")


@pytest.mark.parametrize(
    "value",
    [
        VECTOR_SIG[:-1],  # truncated
        VECTOR_SIG + "0",  # too long
        VECTOR_SIG.upper(),  # uppercase hex: Cal.com's Node digest is lowercase
        "sha256=" + VECTOR_SIG,  # GitHub-style prefix: Cal.com sends none
        " " + VECTOR_SIG,  # surrounding whitespace
        VECTOR_SIG + "\n",
        VECTOR_SIG + "," + VECTOR_SIG,  # list
        "v=1,d=" + VECTOR_SIG,  # Retell format
        "z" * 64,
        "No-Secret-Provided",  # only the exact literal gets the special code
    ],
)
def test_malformed_header(value: str) -> None:
    assert code_of({HDR: value}, body=VECTOR_BODY) == "malformed_signature"


def test_no_secret_provided_literal_is_refused() -> None:
    assert code_of({HDR: "no-secret-provided"}) == "missing_signature"
    # even with no secret configured on our side the answer is still a refusal
    assert code_of({HDR: "no-secret-provided"}, secrets=[]) == "provider_not_configured"


@pytest.mark.parametrize("headers", [{}, {"X-Cal-Webhook-Version": "2021-10-20"}, {HDR: ""}])
def test_missing_header(headers: dict[str, str]) -> None:
    assert code_of(headers) == "missing_signature"


def test_repeated_header_is_refused() -> None:
    md = MultiDict({HDR: VECTOR_SIG})
    md.add(HDR.lower(), VECTOR_SIG)
    with pytest.raises(InvalidSignature) as info:
        calcom.verify(md, VECTOR_BODY, [SECRET], NOW)
    assert info.value.code == "malformed_signature"


@pytest.mark.parametrize("name", [HDR, HDR.lower(), HDR.upper()])
def test_header_name_is_case_insensitive(name: str) -> None:
    calcom.verify({name: VECTOR_SIG}, VECTOR_BODY, [SECRET], NOW)
    calcom.verify(CIMultiDict({name: VECTOR_SIG}), VECTOR_BODY, [SECRET], NOW)


@pytest.mark.parametrize("secrets", [[], [""], [" "]])
def test_no_secret_configured(secrets: list[str]) -> None:
    assert code_of(signed(), secrets=secrets) == "provider_not_configured"


def test_rotation_second_secret_matches() -> None:
    calcom.verify(signed(key="new"), BODY, ["old", "new"], NOW)
    calcom.verify(signed(key="old"), BODY, ["old", "new"], NOW)
    assert code_of(signed(key="neither"), secrets=["old", "new"]) == "invalid_signature"


@given(body=st.binary(), secret=secrets_st)
def test_sign_verify_round_trip(body: bytes, secret: str) -> None:
    calcom.verify(calcom.sign(body, secret, NOW), body, [secret], NOW)


@given(body=st.binary(min_size=1), secret=secrets_st, data=st.data())
def test_any_single_byte_change_fails(body: bytes, secret: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(body) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != body[i]))
    tampered = body[:i] + bytes([new]) + body[i + 1 :]
    with pytest.raises(InvalidSignature) as info:
        calcom.verify(calcom.sign(body, secret, NOW), tampered, [secret], NOW)
    assert info.value.code == "invalid_signature"


# --- parsing and event ids -----------------------------------------------------------------

OLD_UID = "r8YcW3nQe5TjB1uLx7DkPa"
NEW_UID = "Fv2Ls9GmK4hXz0RbN6wTqe"
REQ_UID = "Kp0Tn5VaJ3eWq8MzC2sHyd"
EXPECTED = {
    "BOOKING_CREATED.json": ("BOOKING_CREATED", f"BOOKING_CREATED:{OLD_UID}", OLD_UID),
    "BOOKING_RESCHEDULED.json": ("BOOKING_RESCHEDULED", f"BOOKING_RESCHEDULED:{NEW_UID}", NEW_UID),
    "BOOKING_CANCELLED.json": ("BOOKING_CANCELLED", f"BOOKING_CANCELLED:{NEW_UID}", NEW_UID),
    "BOOKING_REQUESTED.json": ("BOOKING_REQUESTED", f"BOOKING_REQUESTED:{REQ_UID}", REQ_UID),
    "BOOKING_REJECTED.json": ("BOOKING_REJECTED", f"BOOKING_REJECTED:{REQ_UID}", REQ_UID),
    "BOOKING_NO_SHOW_UPDATED.json": (
        "BOOKING_NO_SHOW_UPDATED",
        f"BOOKING_NO_SHOW_UPDATED:{OLD_UID}:2026-02-13T17:26:41.090Z",
        OLD_UID,
    ),
    "MEETING_ENDED.json": ("MEETING_ENDED", f"MEETING_ENDED:{OLD_UID}", OLD_UID),
}


def test_every_fixture_is_covered() -> None:
    assert set(fixture_names("calcom")) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses(name: str) -> None:
    body = fixture_bytes("calcom", name)
    env = calcom.parse(body)
    assert (env.event_type, env.event_id, env.key) == EXPECTED[name]
    assert env.provider == "calcom"
    assert env.payload == orjson.loads(body)
    assert calcom.event_id(env.payload, body) == env.event_id


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_no_show_toggles_are_distinct_events() -> None:
    def body(at: str) -> bytes:
        return dumps(
            {
                "triggerEvent": "BOOKING_NO_SHOW_UPDATED",
                "createdAt": at,
                "payload": {"bookingUid": "b"},
            }
        )

    assert calcom.parse(body("t1")).event_id != calcom.parse(body("t2")).event_id


def test_meeting_started_flat_body() -> None:
    env = calcom.parse(dumps({"triggerEvent": "MEETING_STARTED", "uid": "u1", "id": 3}))
    assert (env.event_id, env.key) == ("MEETING_STARTED:u1", "u1")


@pytest.mark.parametrize(
    ("inner", "key"),
    [({"uid": "u9"}, "u9"), ({"bookingUid": "b9"}, "b9"), ({"formId": "f"}, None)],
)
def test_unknown_trigger_is_accepted_with_body_hash_id(inner: dict, key: str | None) -> None:
    body = dumps({"triggerEvent": "FORM_SUBMITTED", "createdAt": "t", "payload": inner})
    env = calcom.parse(body)
    assert env.event_type == "FORM_SUBMITTED"
    assert env.event_id == sha256_hex(body)
    assert env.key == (key or env.event_id)


def test_extra_fields_are_kept() -> None:
    body = dumps(
        {"triggerEvent": "BOOKING_PAID", "createdAt": "t", "payload": {"uid": "u", "paymentId": 4}}
    )
    env = calcom.parse(body)
    assert (env.event_id, env.payload["payload"]["paymentId"]) == ("BOOKING_PAID:u", 4)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff",
        b"[]",
        b"42",
        b"{}",
        b'{"triggerEvent":null,"createdAt":"t","payload":{"uid":"u"}}',
        b'{"triggerEvent":"","createdAt":"t","payload":{"uid":"u"}}',
        b'{"triggerEvent":"BOOKING_CREATED","payload":{"uid":"u"}}',
        b'{"triggerEvent":"BOOKING_CREATED","createdAt":5,"payload":{"uid":"u"}}',
        b'{"triggerEvent":"BOOKING_CREATED","createdAt":"t"}',
        b'{"triggerEvent":"BOOKING_CREATED","createdAt":"t","payload":"u"}',
        b'{"triggerEvent":"BOOKING_CREATED","createdAt":"t","payload":{}}',
        b'{"triggerEvent":"BOOKING_CREATED","createdAt":"t","payload":{"uid":48213}}',
        b'{"triggerEvent":"BOOKING_CREATED","createdAt":"t","payload":{"uid":""}}',
        b'{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","createdAt":"t","payload":{"uid":"u"}}',
        b'{"triggerEvent":"MEETING_ENDED","id":1}',
        b'{"triggerEvent":"MEETING_ENDED","createdAt":"t","payload":{"uid":"u"}}',
        b'{"triggerEvent":"FORM_SUBMITTED","createdAt":"t"}',
    ],
)
def test_malformed_payloads(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as info:
        calcom.parse(body)
    assert info.value.status == 400
    assert "\n" not in info.value.detail and info.value.detail.startswith("calcom: ")


@given(st.binary())
def test_parse_of_arbitrary_bytes_never_crashes(body: bytes) -> None:
    try:
        env = calcom.parse(body)
    except MalformedPayload:
        return
    assert env.event_id and env.key


@given(
    trigger=st.sampled_from(
        sorted(calcom.BOOKING_EVENTS | calcom.FLAT_EVENTS | {"BOOKING_NO_SHOW_UPDATED", "X"})
    ),
    outer=st.dictionaries(st.sampled_from(["createdAt", "uid", "payload"]), json_leaf, max_size=3),
    inner=st.dictionaries(st.sampled_from(["uid", "bookingUid"]), json_leaf, max_size=2),
)
def test_parse_of_odd_envelopes_fails_closed(trigger: str, outer: dict, inner: dict) -> None:
    body = dumps({"triggerEvent": trigger, **outer} | ({"payload": inner} if inner else {}))
    try:
        env = calcom.parse(body)
    except MalformedPayload:
        return
    assert isinstance(env.event_id, str) and env.event_id
    assert isinstance(env.key, str) and env.key


def test_event_id_is_lenient_on_unvalidated_payloads() -> None:
    assert calcom.event_id({}, b"x") == sha256_hex(b"x")
    assert calcom.event_id({"triggerEvent": "BOOKING_CREATED", "payload": []}, b"y") == sha256_hex(
        b"y"
    )
    no_show = {"triggerEvent": "BOOKING_NO_SHOW_UPDATED", "payload": {"bookingUid": "b"}}
    assert calcom.event_id(no_show, b"z") == sha256_hex(b"z")


def test_registry() -> None:
    assert providers.get("calcom") is calcom
    assert providers.PROVIDERS["calcom"].TOPIC == "webhooks.calcom"
    assert providers.PROVIDERS["calcom"].SIGNATURE_HEADER == HDR
