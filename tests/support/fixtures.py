"""The provider fixtures in ``tests/fixtures/``: webhook bodies in the providers' documented
shapes (docs/providers.md), with invented values, byte for byte as a provider sends them."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.records import WebhookRecord
from testbed.records import record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_names(provider: str) -> list[str]:
    """Every fixture file name for ``provider``, sorted, so tests can cover them all.

    An empty list is an error, not a skip: a loop over no fixtures proves nothing.
    """
    names = sorted(p.name for p in (FIXTURES / provider).glob("*.json"))
    if not names:
        raise FileNotFoundError(f"no fixtures for {provider!r} in {FIXTURES}")
    return names


def fixture_bytes(provider: str, name: str) -> bytes:
    """The raw bytes of one fixture, exactly as a provider would send them."""
    return (FIXTURES / provider / name).read_bytes()


def retell_calls(n: int, *, tag: str = "c", event: str = "call_started") -> list[WebhookRecord]:
    """Records of ``n`` distinct calls (ids ``call_<tag>0000`` on), each the ``event``
    fixture with its call id changed."""
    body = json.loads(fixture_bytes("retell", f"{event}.json"))
    out = []
    for i in range(n):
        body["call"]["call_id"] = f"call_{tag}{i:04d}"
        out.append(record("retell", json.dumps(body).encode()))
    return out
