"""Locate the shared provider fixtures (``/work/shared/fixtures`` locally, a sibling
``../shared`` of the clone in CI) without hard-coding either path."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """``SWITCHBOARD_FIXTURES_DIR`` if set, else ``<repo>/../shared/fixtures``.

    A missing directory is an error, not a skip: a test that silently skips proves nothing.
    """
    override = os.environ.get("SWITCHBOARD_FIXTURES_DIR")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"
    if not path.is_dir():
        raise FileNotFoundError(f"provider fixtures not found at {path}")
    return path


def fixture_names(provider: str) -> list[str]:
    """Every fixture file name for ``provider``, sorted, so tests can cover them all."""
    return sorted(p.name for p in (fixtures_dir() / provider).glob("*.json"))


def fixture_bytes(provider: str, name: str) -> bytes:
    """The raw bytes of one fixture, exactly as a provider would send them."""
    return (fixtures_dir() / provider / name).read_bytes()
