"""What operators see: secrets never, phone numbers masked, transcripts truncated.

Pure functions over plain values, so the rules are unit-tested on their own. Bodies and
rows can carry a caller's number anywhere (``from_number``, ``attendeePhoneNumber``, a
summary, metadata), so every string is scanned for E.164 numbers, not just known fields.
Webhook bodies carry no secrets and the ingress writes no signature to Kafka, but a
header or field *named* like a secret is hidden anyway: a new provider field, or a future
header, must not leak by accident.

Bodies, headers and rows are written by strangers (a booker's name, a caller's words), so
everything printed goes through :func:`neutralise` last: terminal control characters
(ESC sequences that could retitle the window, rewrite the screen or hide text, C1 codes,
bidi overrides) are shown as ``\\u001b``-style escapes instead of being obeyed. The same
escapes are valid JSON, so ``--json`` output goes through it too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from pipeline.logs import mask_phone

# Same rule as the log formatter: "+" and 7 to 15 digits.
PHONE = re.compile(r"\+\d{7,15}")
SECRET_NAME = re.compile(
    r"signature|secret|token|authori[sz]ation|api[_-]?key|password|passwd|cookie|credential",
    re.IGNORECASE,
)
TRANSCRIPT_KEYS = frozenset(
    {"transcript", "transcript_object", "transcript_with_tool_calls", "scrubbed_transcript"}
)
TRANSCRIPT_CHARS = 200
HIDDEN = "*** (hidden)"
# C0 controls but newline and tab, DEL and C1 controls, and the invisible bidi controls that
# can reorder what a terminal shows (Trojan Source).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str) -> str:
    """``text`` with every terminal control character shown as ``\\uXXXX``."""
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_text(value: Any, *, indent: bool = True) -> str:
    """``--json`` output: datetimes ISO, decimals as strings, control characters escaped."""
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
    if indent:
        option |= orjson.OPT_INDENT_2
    return neutralise(orjson.dumps(value, default=_plain, option=option).decode())


def mask_text(text: str) -> str:
    return PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def truncate(text: str, limit: int = TRANSCRIPT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def scrub(value: Any, *, unmasked: bool = False, limit: int = TRANSCRIPT_CHARS) -> Any:
    """A copy of a JSON-like value fit to print: secret-named fields hidden, transcripts
    truncated, phone numbers masked (unless ``unmasked``)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            name = str(key)
            if SECRET_NAME.search(name):
                out[name] = HIDDEN
            elif name in TRANSCRIPT_KEYS:
                out[name] = _transcript(inner, unmasked=unmasked, limit=limit)
            else:
                out[name] = scrub(inner, unmasked=unmasked, limit=limit)
        return out
    if isinstance(value, list | tuple):
        return [scrub(v, unmasked=unmasked, limit=limit) for v in value]
    if isinstance(value, str):
        return value if unmasked else mask_text(value)
    return value


def _transcript(value: Any, *, unmasked: bool, limit: int) -> Any:
    if isinstance(value, str):
        # Mask before cutting: a cut must not leave a number's head unmasked.
        return truncate(value if unmasked else mask_text(value), limit)
    if isinstance(value, list | tuple):
        return f"[{len(value)} items not shown]"
    return scrub(value, unmasked=unmasked, limit=limit)


def safe_headers(headers: Mapping[str, str], *, unmasked: bool = False) -> dict[str, str]:
    """Kafka headers to print: secret-named ones hidden, phone numbers masked."""
    return {
        name: HIDDEN if SECRET_NAME.search(name) else (value if unmasked else mask_text(value))
        for name, value in headers.items()
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, default=_plain, option=orjson.OPT_INDENT_2).decode()


def body_text(body: bytes, *, unmasked: bool = False) -> str:
    """A raw webhook body, pretty-printed and scrubbed; a non-JSON body is shown as text
    (masked and truncated), which is what a poison record often is."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = truncate(body.decode("utf-8", "replace"), 2000)
        return f"(not JSON, {len(body)} bytes)\n{text if unmasked else mask_text(text)}"
    return pretty_json(scrub(parsed, unmasked=unmasked))


def body_value(body: bytes) -> Any:
    """A raw body for ``--json``: the parsed JSON, or ``{"not_json": text}`` (cut to 2,000
    characters); scrub it before printing."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"not_json": truncate(body.decode("utf-8", "replace"), 2000)}


def field_lines(row: Mapping[str, Any], *, unmasked: bool = False, indent: str = "  ") -> str:
    """A database row as aligned ``column  value`` lines, scrubbed like a body."""
    cleaned = scrub({k: _cell(v) for k, v in row.items()}, unmasked=unmasked)
    width = max((len(k) for k in cleaned), default=0)
    lines = []
    for key, value in cleaned.items():
        shown = "NULL" if value is None else value
        if isinstance(shown, dict | list):
            shown = orjson.dumps(shown).decode()
        elif isinstance(shown, str):
            shown = shown.replace("\r", "\\r").replace("\n", "\\n")  # one line per field
        lines.append(f"{indent}{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def format_time(value: datetime | None) -> str | None:
    """A naive UTC ``DATETIME`` as ``2026-01-05T17:02:11.482Z``."""
    if value is None:
        return None
    text = value.isoformat(timespec="milliseconds")
    return text + "Z" if value.tzinfo is None else text


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        # MySQL DATETIMEs here are UTC without a zone: say so.
        text = value.isoformat(timespec="milliseconds")
        return text + "Z" if value.tzinfo is None else text
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return orjson.loads(value)  # JSON columns come back as text from some drivers
        except orjson.JSONDecodeError:
            return value
    return value


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (no borders: easy to grep and to paste)."""
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
