"""Analyst tokens: who may read which companies (docs/analyst.md, "Tokens").

``SWITCHBOARD_ANALYST_TOKENS`` is a comma-separated list of entries::

    [NAME=]sha256:<64 hex digits>@SCOPE      a hashed token (production)
    [NAME=]<plain token>[@SCOPE]             a plain token (development only)

``SCOPE`` is ``admin`` (every company) or company ids joined by ``+`` (``1+2+7``). A hashed
entry must name its scope; a plain entry without one is an admin token, which is how the
single-token development setups of earlier versions keep working. ``NAME`` labels the
entry in logs (never the token); it defaults to ``token-<position>``.

Only the SHA-256 of a token is needed on the workers, so the environment (and anything
that dumps it) holds no usable credential. Minted tokens carry 256 random bits, far beyond
guessing, which is why a plain, unsalted SHA-256 is enough here (a password hash exists to
slow the guessing of low-entropy secrets). A request's token is hashed and compared with
every configured digest with ``hmac.compare_digest``, whichever matches first, so the time
taken does not depend on how much of a digest matched. Rotation: add the new entry, hand
out the new token, remove the old entry; both work in between.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.errors import ConfigError

HASHED = "sha256:"
ADMIN = "admin"
TOKEN_PREFIX = "sbt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_COMPANY = re.compile(r"[1-9][0-9]{0,17}")
_PLAIN = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no spaces


@dataclass(frozen=True, slots=True)
class Grant:
    """One configured token: its digest and what it may read (``companies`` None: all)."""

    name: str
    digest: bytes
    companies: frozenset[int] | None
    hashed: bool

    @property
    def admin(self) -> bool:
        return self.companies is None

    def may_read(self, company_id: int) -> bool:
        return self.companies is None or company_id in self.companies


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def digest_of(token: str | bytes) -> bytes:
    raw = token.encode("ascii") if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


def parse_scope(raw: str) -> frozenset[int] | None:
    """``admin`` → None; ``1+2`` → {1, 2}; ValueError otherwise."""
    if raw == ADMIN:
        return None
    parts = raw.split("+")
    if not all(_COMPANY.fullmatch(p) for p in parts):
        raise ValueError("scope must be 'admin' or company ids joined by '+' (1+2+7)")
    return frozenset(int(p) for p in parts)


def format_scope(companies: frozenset[int] | None) -> str:
    return ADMIN if companies is None else "+".join(str(c) for c in sorted(companies))


def _split(entry: str, name: str) -> tuple[str, str, str, str]:
    """``[NAME=]CREDENTIAL[@SCOPE]`` → (name, credential, "@" or "", scope). A name
    labels a credential that follows it: in ``dGVzdA==`` or ``YWI=`` (a base64 token's
    padding) the "=" belongs to the token."""
    head, eq, rest = entry.partition("=")
    if eq and _NAME.fullmatch(head) and rest.partition("@")[0].lstrip("="):
        name, entry = head, rest
    credential, at, scope = entry.rpartition("@") if "@" in entry else (entry, "", "")
    return name, credential, at, scope


def plain_token(entry: str) -> str | None:
    """The token of a plain (development) entry, for local clients; None for hashed ones."""
    _, credential, _, _ = _split(entry.strip(), "")
    return None if credential.startswith(HASHED) or not credential else credential


def parse_entry(entry: str, position: int) -> Grant:
    """One entry of the list; ValueError with a message that never quotes a plain token."""
    name = f"token-{position}"
    name, credential, at, scope_raw = _split(entry, name)
    if credential.startswith(HASHED):
        hex_digest = credential[len(HASHED) :]
        if not _DIGEST.fullmatch(hex_digest):
            raise ValueError(f"{name}: sha256: must be followed by 64 lowercase hex digits")
        if not at:
            raise ValueError(f"{name}: a hashed entry needs a scope (@admin or @1+2)")
        return Grant(name, bytes.fromhex(hex_digest), parse_scope(scope_raw), hashed=True)
    if not _PLAIN.fullmatch(credential):
        raise ValueError(f"{name}: a plain token must be printable ASCII without spaces")
    companies = parse_scope(scope_raw) if at else None
    return Grant(name, digest_of(credential), companies, hashed=False)


@dataclass(frozen=True)
class TokenBook:
    """Every configured token; ``check`` finds the grant of an offered token."""

    grants: tuple[Grant, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TokenBook:
        grants, problems = [], []
        for position, entry in enumerate(entries, start=1):
            try:
                grants.append(parse_entry(entry.strip(), position))
            except ValueError as exc:
                problems.append(f"SWITCHBOARD_ANALYST_TOKENS entry {exc}")
        names = [g.name for g in grants]
        problems += [
            f"SWITCHBOARD_ANALYST_TOKENS names {n!r} twice"
            for n in sorted({n for n in names if names.count(n) > 1})
        ]
        if problems:
            raise ConfigError(problems)
        return cls(tuple(grants))

    @property
    def plain(self) -> list[Grant]:
        return [g for g in self.grants if not g.hashed]

    def check(self, offered: str) -> Grant | None:
        """The grant whose digest matches, comparing against every entry (constant time per
        entry, no early exit). A non-ASCII token can match nothing: None, never an error."""
        if not offered or not offered.isascii():
            return None
        digest = digest_of(offered)
        found = None
        for grant in self.grants:
            if hmac.compare_digest(digest, grant.digest) and found is None:
                found = grant
        return found


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    scheme, _, offered = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return offered.strip() or None


def mint() -> str:
    """A new token: a recognisable prefix (secret scanners) and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def config_entry(token: str, companies: frozenset[int] | None, name: str | None = None) -> str:
    """The hashed entry for ``SWITCHBOARD_ANALYST_TOKENS``."""
    prefix = f"{name}=" if name else ""
    return f"{prefix}{HASHED}{digest_of(token).hex()}@{format_scope(companies)}"
