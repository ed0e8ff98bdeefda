"""JSON-lines logging for every entry point, with the request's correlation id in each record.

Only entry points call :func:`configure_logging`; library modules just use
``logging.getLogger(__name__)``. The correlation id travels in a contextvar, so code deep in
a request (the producer, the routing cache) logs it without having it passed down, and a
background task created inside the request inherits it (asyncio copies the context).

docs/architecture.md, invariant 7: secrets and PII stay out of logs. Callers must never log bodies,
transcripts or secrets; phone numbers go through :func:`mask_phone`. As a second line of
defence the formatter masks anything that looks like an E.164 number in the message and in
string extras, so one careless ``log.info("... %s", to_number)`` does not leak a caller.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

import orjson

correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

# E.164: "+" then up to 15 digits. Seven or more so that short numbers in messages
# ("+5 retries") are left alone.
_PHONE = re.compile(r"\+\d{7,15}")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "correlation_id"}
)


def mask_phone(phone: str | None) -> str:
    """``"+14155550142" -> "+1415*****42"``: enough to tell numbers apart, not to call them.

    Keeps the ``+``, the first four digits (country and area code) and the last two. Anything
    too short to keep that much of is masked entirely.
    """
    if not phone:
        return ""
    if len(phone) < 9:
        return "*" * len(phone)
    return phone[:5] + "*" * (len(phone) - 7) + phone[-2:]


def _mask_text(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


@contextmanager
def correlation(correlation_id: str) -> Iterator[None]:
    """Bind ``correlation_id`` to every record logged inside the block (and its tasks)."""
    token = correlation_id_var.set(correlation_id)
    try:
        yield
    finally:
        correlation_id_var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _mask_text(record.getMessage()),
        }
        cid = getattr(record, "correlation_id", None) or correlation_id_var.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            entry[key] = _mask_text(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            # Tracebacks name code, not data: frames and the exception message. Exception
            # messages in this code base are one-line and PII-free (see pipeline.errors).
            entry["exc"] = _mask_text("".join(traceback.format_exception(*record.exc_info)))
        return orjson.dumps(entry, default=str).decode("utf-8")


_HANDLER_MARK = "_switchboard_json_handler"


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """Send every record to ``stream`` (stderr) as JSON lines at ``level``.

    Idempotent: a second call replaces the handler it installed instead of adding another,
    so records are never printed twice. aiohttp's access log is silenced: the ingress logs
    its own line per request, with the correlation id and provider, and without the query
    string.
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiokafka logs every failed reconnect at ERROR; one line per attempt is enough noise.
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))
