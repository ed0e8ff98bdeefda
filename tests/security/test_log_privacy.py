"""Issue 13, defect 6: no row data reaches a log line through an exception.

SQLAlchemy's exception text carries ``[parameters: ...]`` (names, e-mail addresses, phone
numbers, summaries) unless the engine hides them, and MySQL's own messages quote values
(``Duplicate entry '...' for key``). Whatever the apply path or the ingress logs with a
traceback, the log line says which error (class, errno) and where, never the data.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import DBAPIError

from pipeline import database
from pipeline.errors import DatabaseUnavailable
from pipeline.logs import configure_logging
from pipeline.models import companies, customers

pytestmark = pytest.mark.integration

log = logging.getLogger("switchboard.test.privacy")

NAME = "Zelda Quokkasworth"
EMAIL = "zelda.quokka@example.org"
PHONE = "(415) 555-0177"
SUMMARY = "caller asked about her crown and a root canal next tuesday"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    found = [v for v in (NAME, EMAIL, SUMMARY) if v.lower() in lowered]
    if "555-0177" in text or "5550177" in text:
        found.append(PHONE)
    if "zelda" in lowered or "quokka" in lowered:
        found.append("a fragment of the name or e-mail address")
    return found


def row(company_id: int) -> dict[str, object]:
    return {"company_id": company_id, "phone": PHONE, "email": EMAIL, "name": NAME}


def test_a_refused_insert_logs_its_errno_and_no_parameters(
    engine: Engine, stream: io.StringIO
) -> None:
    # Company 999 does not exist: MySQL answers 1452, SQLAlchemy adds the parameters.
    with pytest.raises(DBAPIError) as caught:
        with engine.begin() as conn:
            conn.execute(insert(customers).values(row(999)))
    assert NAME not in str(caught.value), "the engine must hide parameters (hide_parameters)"
    try:
        raise caught.value
    except DBAPIError:
        log.exception("customer insert failed")
    (entry,) = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert leaks(stream.getvalue()) == []
    assert entry["exc_type"] == "IntegrityError"
    assert "1452" in entry["exc"], entry["exc"]
    assert "test_log_privacy.py" in entry["exc"]  # frames are kept: where, not what


def test_a_refused_many_row_insert_hides_the_values_its_statement_carries(
    engine: Engine,
) -> None:
    # insert_many writes the values into the statement's text, which an error quotes.
    columns = ("company_id", "phone", "email", "name")
    with pytest.raises(DBAPIError) as caught:
        with engine.begin() as conn:
            database.insert_many(conn, "customers", columns, [(999, PHONE, EMAIL, NAME)])
    message = str(caught.value)
    assert leaks(message) == [], message
    assert "1452" in message and "INSERT INTO customers" in message
    assert "(1 rows, values hidden)" in message


def test_a_duplicate_key_is_logged_without_the_value_mysql_quotes(
    engine: Engine, stream: io.StringIO
) -> None:
    with engine.begin() as conn:
        conn.execute(insert(companies).values(id=1, name="Harbor Dental", timezone="UTC"))
        conn.execute(insert(customers).values(row(1)))
    with pytest.raises(DBAPIError) as caught:
        with engine.begin() as conn:
            conn.execute(insert(customers).values(row(1)))
    assert "555-0177" in str(caught.value.orig)  # MySQL's own message quotes the key
    try:
        raise DatabaseUnavailable("customers: conflict", reason="mysql_1062") from caught.value
    except DatabaseUnavailable:
        log.exception("apply failed")
    text = stream.getvalue()
    assert leaks(text) == []
    assert "1062" in text and "customers: conflict" in text


def test_messages_of_foreign_exceptions_are_withheld(stream: io.StringIO) -> None:
    try:
        try:
            int(EMAIL)
        except ValueError as exc:
            raise KeyError(NAME) from exc
    except KeyError:
        log.exception("lookup failed")
    text = stream.getvalue()
    assert leaks(text) == []
    assert "ValueError" in text and "KeyError" in text


def test_messages_of_our_own_errors_and_os_errors_are_kept(stream: io.StringIO) -> None:
    try:
        raise DatabaseUnavailable("MySQL unreachable: connection refused")
    except DatabaseUnavailable:
        log.exception("waiting")
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9092)")
    except OSError:
        log.exception("broker")
    text = stream.getvalue()
    assert "MySQL unreachable: connection refused" in text
    assert "127.0.0.1', 9092" in text


def test_e_mail_addresses_in_messages_and_extras_are_masked(stream: io.StringIO) -> None:
    log.warning("customer %s not found", EMAIL, extra={"who": EMAIL.upper()})
    text = stream.getvalue()
    assert leaks(text) == []
    assert "@example.org" not in text
