"""JSON-lines logging: one object per line, correlation id included, phones masked."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from pipeline.logs import configure_logging, correlation, correlation_id_var, mask_phone


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])


def records(stream: io.StringIO) -> list[dict[str, object]]:
    """This test's records (asyncio logs its selector at DEBUG when a loop starts)."""
    entries = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in entries if e["logger"] == "switchboard.test"]


@pytest.mark.parametrize(
    "phone,masked",
    [
        ("+14155550142", "+1415*****42"),
        ("+442071838750", "+4420******50"),
        ("+3312", "*****"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_phone(phone: str | None, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_records_are_json_lines_with_extras(stream: io.StringIO) -> None:
    logging.getLogger("switchboard.test").info(
        "accepted %s", "call_ended", extra={"provider": "retell", "offset": 42}
    )
    (entry,) = records(stream)
    assert entry["msg"] == "accepted call_ended"
    assert entry["level"] == "info"
    assert entry["logger"] == "switchboard.test"
    assert entry["provider"] == "retell" and entry["offset"] == 42
    assert "correlation_id" not in entry
    assert str(entry["ts"]).endswith("+00:00")


def test_correlation_id_is_in_every_record_of_the_block(stream: io.StringIO) -> None:
    log = logging.getLogger("switchboard.test")
    with correlation("cid-1"):
        log.info("one")
        log.warning("two")
    log.info("three")
    assert [r.get("correlation_id") for r in records(stream)] == ["cid-1", "cid-1", None]


async def test_tasks_inherit_the_correlation_id(stream: io.StringIO) -> None:
    log = logging.getLogger("switchboard.test")

    async def background() -> None:
        await asyncio.sleep(0)
        log.info("from a task")

    token = correlation_id_var.set("cid-task")
    task = asyncio.create_task(background())
    correlation_id_var.reset(token)
    await task
    assert records(stream)[0]["correlation_id"] == "cid-task"


def test_phone_numbers_are_masked_even_when_logged_by_mistake(stream: io.StringIO) -> None:
    logging.getLogger("switchboard.test").info(
        "caller %s called %s", "+14155550142", "+14155550199", extra={"to": "+14155550199"}
    )
    (entry,) = records(stream)
    assert "+14155550142" not in stream.getvalue() and "+14155550199" not in stream.getvalue()
    assert entry["msg"] == "caller +1415*****42 called +1415*****99"
    assert entry["to"] == "+1415*****99"


def test_exceptions_are_logged_on_one_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("switchboard.test").exception("failed")
    (entry,) = records(stream)
    assert entry["exc_type"] == "ValueError"
    assert "boom" in str(entry["exc"])


def test_configure_twice_does_not_duplicate(stream: io.StringIO) -> None:
    configure_logging("INFO", stream=stream)
    logging.getLogger("switchboard.test").info("once")
    logging.getLogger("switchboard.test").debug("filtered")
    assert len(records(stream)) == 1


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging("LOUD")


def test_secrets_never_show(stream: io.StringIO) -> None:
    from pipeline.settings import Secret

    logging.getLogger("switchboard.test").info("key %s", Secret("sk-live-123"), extra={"k": Secret("x")})  # fmt: skip
    assert "sk-live-123" not in stream.getvalue()
