"""The provider fixtures in ``tests/fixtures/``: webhook bodies in the providers' documented
shapes (docs/providers.md), with invented values, byte for byte as a provider sends them."""

from __future__ import annotations

from pathlib import Path

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
