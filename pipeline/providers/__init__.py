"""The webhook providers Switchboard accepts, by the name used in routes and Kafka headers.

Each provider is one sans-I/O module that holds everything the pipeline knows about it
(``pipeline.providers.base.Provider``): its route, topic and secrets (``ROUTE``, ``TOPIC``,
``SECRETS_ENV``), its signature check (``verify``, and ``sign`` for the simulator), its
event ids and Kafka keys (``parse``), and what its events say (``facts``, typed by
:mod:`pipeline.providers.facts`). Callers look providers up here instead of naming them,
so adding a provider is its module, its tests and one line in this registry (plus its
secrets' field in ``Settings``); docs/providers.md, "Adding a provider".
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
