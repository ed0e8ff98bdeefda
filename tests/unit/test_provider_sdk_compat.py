"""Our Retell verifier against the official one (retell-sdk 6.2.13, ``retell/lib/webhook_auth``).

What Retell signs is checked by their SDK; if we disagreed with it, real webhooks would be
refused (or forged ones let in). So: each side accepts what the other signs, and for any
header we accept, the SDK accepts too. The one deliberate difference is pinned below.
"""

from __future__ import annotations

import time

import pytest
import retell.lib as sdk_lib
from hypothesis import given
from hypothesis import strategies as st
from retell.lib import webhook_auth as sdk

from pipeline.errors import InvalidSignature
from pipeline.providers import retell as ours

KEY = "test-api-key"
WINDOW = ours.TOLERANCE_MS
VECTOR_HEADER = "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"

# The SDK works on ``str`` and encodes UTF-8, so compare on text that has a UTF-8 form.
text_st = st.text(st.characters(blacklist_categories=("Cs",)))
key_st = text_st.filter(str.strip)
ts_st = st.integers(0, 10**14)


def sdk_sign(body: str, key: str, ts: int) -> str:
    return sdk.symmetric["sign"](body, key, ts)


def sdk_verify(body: str, key: str, header: str, now_ms: int) -> bool:
    return bool(sdk.symmetric["verify"](body, key, header, {"timestamp": now_ms}))


def we_accept(body: str, key: str, header: str, now_ms: int) -> bool:
    try:
        ours.verify({ours.SIGNATURE_HEADER: header}, body.encode(), [key], now_ms)
    except InvalidSignature:
        return False
    return True


def test_sdk_signer_reproduces_the_readme_vector() -> None:
    assert sdk_sign('{"event":"call_ended"}', KEY, 1_700_000_000_000) == VECTOR_HEADER


@given(body=text_st, key=key_st, ts=ts_st, skew=st.integers(-WINDOW, WINDOW))
def test_we_accept_what_the_sdk_signs(body: str, key: str, ts: int, skew: int) -> None:
    assert we_accept(body, key, sdk_sign(body, key, ts), ts + skew)


@given(body=text_st, key=key_st, ts=ts_st, skew=st.integers(-WINDOW, WINDOW))
def test_sdk_accepts_what_we_sign(body: str, key: str, ts: int, skew: int) -> None:
    header = ours.sign(body.encode(), key, ts)[ours.SIGNATURE_HEADER]
    assert header == sdk_sign(body, key, ts)
    assert sdk_verify(body, key, header, ts + skew)


def test_sdk_public_verify_accepts_our_header_at_the_real_time() -> None:
    """``retell.lib.verify`` (what ``Retell(...).verify`` is) reads the real clock."""
    body = '{"event":"call_started","call":{"call_id":"c1","note":"caf\u00e9"}}'
    header = ours.sign(body.encode(), KEY, int(time.time() * 1000))[ours.SIGNATURE_HEADER]
    assert sdk_lib.verify(body, KEY, header) is True
    assert sdk_lib.verify(body + " ", KEY, header) is False


@st.composite
def headers(draw: st.DrawFn, body: str, key: str, now: int) -> str:
    """The valid header for ``body``, or one with exactly one part subtly wrong."""
    ts = now + draw(st.integers(-WINDOW, WINDOW))
    parts = {"prefix": "v=", "digits": str(ts), "sep": ",d=", "suffix": ""}
    parts["digest"] = sdk_sign(body, key, ts).split(",d=")[1]
    good = parts["digest"]
    wrong = {
        "prefix": ["V=", "t=", "", "x,v="],
        "digits": ["0" + str(ts), " " + str(ts), str(ts) + "x", str(now + WINDOW + 1)],
        "sep": [", d=", ",D=", ";d="],
        "digest": [good.upper(), good[:-1], good + "0", "0" * 64, good[::-1]],
        "suffix": [" ", ",x=1", "\n"],
    }
    part = draw(st.sampled_from([None, *wrong]))
    if part is not None:
        parts[part] = draw(st.sampled_from(wrong[part]))
    return "{prefix}{digits}{sep}{digest}{suffix}".format(**parts)


@given(body=text_st, key=key_st, now=st.integers(WINDOW, 10**14), data=st.data())
def test_same_verdict_as_the_sdk_on_near_miss_headers(
    body: str, key: str, now: int, data: st.DataObject
) -> None:
    header = data.draw(headers(body, key, now))
    assert we_accept(body, key, header, now) == sdk_verify(body, key, header, now)


# zeros of the Arabic-Indic, fullwidth and Devanagari digit blocks
@pytest.mark.parametrize("zero", ["\u0660", "\uff10", "\u0966"])
def test_we_are_stricter_than_the_sdk_on_non_ascii_digits(zero: str) -> None:
    """The SDK's ``\\d`` matches any Unicode digit; Retell only sends ASCII, so we refuse."""
    body, now = '{"event":"call_ended"}', 1_700_000_000_000
    digits = "".join(chr(ord(zero) + int(d)) for d in str(now))
    header = VECTOR_HEADER.replace(str(now), digits)
    assert sdk_verify(body, KEY, header, now) is True
    assert we_accept(body, KEY, header, now) is False
