"""The webhook providers Switchboard accepts, by the name used in routes and Kafka headers.

Each provider is a sans-I/O module with the same functions (``verify``, ``parse``,
``event_id``, ``sign``) and constants (``NAME``, ``TOPIC``, ``SIGNATURE_HEADER``); see
``pipeline.providers.base.Provider``. Callers look providers up here instead of importing
them one by one, so adding a provider is one line in this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pipeline.providers import calcom, retell
from pipeline.providers.base import Envelope, Provider, sha256_hex

PROVIDERS: Mapping[str, Provider] = MappingProxyType({retell.NAME: retell, calcom.NAME: calcom})


def get(name: str) -> Provider:
    """The provider module called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise KeyError(f"unknown provider {name!r} (known: {known})") from None


__all__ = ["PROVIDERS", "Envelope", "Provider", "get", "sha256_hex"]
