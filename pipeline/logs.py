"""JSON-lines logging for every entry point, with the request's correlation id in each record.

Only entry points call :func:`configure_logging`; library modules just use
``logging.getLogger(__name__)``. The correlation id travels in a contextvar, so code deep in
a request (the producer, the routing cache) logs it without having it passed down, and a
background task created inside the request inherits it (asyncio copies the context).

docs/architecture.md, invariant 7: secrets and PII stay out of logs. Callers must never log bodies,
transcripts or secrets; phone numbers go through :func:`mask_phone`. As a second line of
defence the formatter masks anything that looks like an E.164 number or an e-mail address
anywhere in the line, so one careless ``log.info("... %s", to_number)`` does not leak a
caller.

Tracebacks are the third way data could leak: SQLAlchemy's exception text quotes the
statement's parameters, MySQL's own messages quote values (``Duplicate entry '...'``), and a
``ValueError`` quotes whatever failed to parse. A logged traceback therefore keeps its
frames (file, line, function: where) and the class of every exception in the chain, but the
*message* only of exceptions known to carry no row data: our own error tree (whose messages
are one-line and data-free, see :mod:`pipeline.errors`), OS and network errors, and the
Kafka clients'. A database error says its MySQL errno instead; any other message is withheld
(docs/security.md, "Logs").
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

# "local@domain.tld": masked to its first character ("z***@***") wherever it appears.
_EMAIL = re.compile(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")

# Exceptions from these modules say what failed without quoting the data it failed on.
_TRUSTED_MESSAGES = ("pipeline.", "agents.", "testbed.", "aiokafka.", "kafka.", "faust.", "mode.")
# Built-in exceptions whose messages name code (attributes, modules, names) or the OS.
_CODE_ERRORS = (
    OSError,
    AttributeError,
    NameError,
    ImportError,
    NotImplementedError,
    RecursionError,
)
_WITHHELD = "(message withheld: it may quote event data)"

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
    text = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return _EMAIL.sub(r"\1***@***", text)


def _safe_message(exc: BaseException) -> str:
    """What a logged exception may say about itself (see the module docstring)."""
    errno = _mysql_errno(exc)
    if errno is not None:
        return f"MySQL error {errno}"
    module = type(exc).__module__ or ""
    if isinstance(exc, _CODE_ERRORS) or module.startswith(_TRUSTED_MESSAGES):
        return str(exc)
    if module.startswith("sqlalchemy"):
        return "(statement and parameters withheld)"
    return _WITHHELD if str(exc) else ""


def _mysql_errno(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    if orig is None and type(exc).__module__.startswith("pymysql"):
        orig = exc
    args = getattr(orig, "args", None)
    return args[0] if args and isinstance(args[0], int) else None


def format_exception(exc: BaseException) -> str:
    """A traceback of ``exc`` and its chain (causes and contexts), oldest first, with
    frames and class names but only the messages :func:`_safe_message` allows."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    parts: list[str] = []
    for older, newer in zip(reversed(chain), [*reversed(chain)][1:] + [None], strict=True):
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_list(traceback.extract_tb(older.__traceback__)))
        name = type(older).__qualname__
        message = _safe_message(older)
        parts.append(f"{name}: {message}\n" if message else f"{name}\n")
        if newer is not None:
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if newer.__cause__ is older
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
    return "".join(parts)


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
            "msg": record.getMessage(),
        }
        cid = getattr(record, "correlation_id", None) or correlation_id_var.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            entry[key] = value
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            entry["exc_type"] = type(exc).__name__
            entry["exc"] = format_exception(exc)
        # Masked last, over the whole line: nested extras and tracebacks included.
        return _mask_text(orjson.dumps(entry, default=str).decode("utf-8"))


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
