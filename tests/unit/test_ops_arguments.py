"""Argument parsing of the ops commands: pure functions, and the command line's one-line
errors for bad arguments (no Kafka or MySQL needed: arguments are checked first)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import cli, register_commands
from pipeline.kafka_reader import Stretch
from pipeline.ops import BadArguments
from pipeline.ops.arguments import (
    build_stretch,
    format_ms,
    parse_partitions,
    parse_position,
    parse_time,
    resolve_topic,
)
from pipeline.settings import Settings

JAN_5_17H = 1_767_632_400_000  # 2026-01-05T17:00:00Z


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-05T17:00:00Z",
        "2026-01-05T17:00:00+00:00",
        "2026-01-05T09:00:00-08:00",
        "2026-01-05T17:00",  # no offset: UTC
        "2026-01-05 17:00:00.000",
        " 2026-01-05T17:00:00Z ",
    ],
)
def test_parse_time_accepts_iso_8601(text: str) -> None:
    assert parse_time(text, "--from-time") == JAN_5_17H


def test_parse_time_date_only_is_midnight_utc() -> None:
    assert parse_time("2026-01-05", "--since") == JAN_5_17H - 17 * 3_600_000


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "05/01/2026", "1767632400000"])
def test_parse_time_rejects_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(BadArguments) as caught:
        parse_time(text, "--from-time")
    message = str(caught.value)
    assert message.startswith("--from-time: ") and "\n" not in message


def test_format_ms_round_trips() -> None:
    assert format_ms(JAN_5_17H + 482) == "2026-01-05T17:00:00.482Z"
    assert parse_time(format_ms(JAN_5_17H + 482), "x") == JAN_5_17H + 482
    assert format_ms(None) == "-"


def test_stretch_by_offsets_and_by_times() -> None:
    assert build_stretch(from_offset=5, from_time=None, to_offset=9, to_time=None) == Stretch(
        from_offset=5, to_offset=9
    )
    assert build_stretch(
        from_offset=None, from_time="2026-01-05T17:00:00Z", to_offset=None, to_time=None
    ) == Stretch(from_time_ms=JAN_5_17H)
    # Mixed kinds are allowed: from a time to an offset.
    assert build_stretch(
        from_offset=None, from_time="2026-01-05T17:00:00Z", to_offset=3, to_time=None
    ) == Stretch(from_time_ms=JAN_5_17H, to_offset=3)
    assert build_stretch(from_offset=4, from_time=None, to_offset=4, to_time=None).to_offset == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"from_offset": 0, "from_time": "2026-01-05"},
            "exactly one of --from-offset and --from-time",
        ),
        ({}, "exactly one of --from-offset and --from-time"),
        ({"from_offset": 0, "to_offset": 5, "to_time": "2026-01-05"}, "at most one of --to-offset"),
        ({"from_offset": -1}, "--from-offset must be 0 or more"),
        ({"from_offset": 0, "to_offset": -2}, "--to-offset must be 0 or more"),
        ({"from_offset": 10, "to_offset": 9}, "--to-offset 9 is before --from-offset 10"),
        ({"from_time": "2026-01-05T17:00Z", "to_time": "2026-01-05T16:59Z"}, "--to-time is before"),
        ({"from_time": "soon"}, "--from-time: 'soon' is not an ISO-8601 time"),
        ({"from_offset": 1, "to_time": "later"}, "--to-time: 'later' is not an ISO-8601 time"),
    ],
)
def test_stretch_errors_are_one_line(kwargs: dict[str, object], message: str) -> None:
    full: dict[str, object] = {
        "from_offset": None,
        "from_time": None,
        "to_offset": None,
        "to_time": None,
    }
    full.update(kwargs)
    with pytest.raises(BadArguments, match=message) as caught:
        build_stretch(**full)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_topics_take_the_settings_prefix() -> None:
    plain, prefixed = Settings(), Settings(topic_prefix="t1234.")
    for name in ("webhooks.retell", "retell"):
        assert resolve_topic(plain, name) == "webhooks.retell"
        assert resolve_topic(prefixed, name) == "t1234.webhooks.retell"
    assert resolve_topic(prefixed, "t1234.webhooks.calcom") == "t1234.webhooks.calcom"
    assert resolve_topic(prefixed, "calcom") == "t1234.webhooks.calcom"
    for bad in ("webhooks.dlq", "switchboard-bucket-snapshots", "webhooks.twilio", ""):
        with pytest.raises(
            BadArguments, match="--topic must be webhooks.retell or webhooks.calcom"
        ):
            resolve_topic(prefixed, bad)


def test_partitions_and_positions() -> None:
    assert parse_partitions(()) is None
    assert parse_partitions((3, 1, 3)) == [1, 3]
    with pytest.raises(BadArguments):
        parse_partitions((-1,))
    assert parse_position("3:1042") == (3, 1042)
    assert parse_position("17") == (None, 17)  # a bare offset: on whichever partitions
    for bad in ("", "a:1", "1:", ":5", "1:2:3", "-1:4", "1.5"):
        with pytest.raises(BadArguments, match="PARTITION:OFFSET"):
            parse_position(bad)


@pytest.fixture
def run() -> object:
    register_commands()
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        # Unreachable services: the arguments must fail before anything is contacted.
        env = {
            "SWITCHBOARD_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "SWITCHBOARD_DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1:1/db",
        }
        result = runner.invoke(cli, list(args), prog_name="switchboard", env=env)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["replay", "--topic", "webhooks.retell", "--from-offset", "0", "--from-time", "2026-01-05"],
         "Error: give exactly one of --from-offset and --from-time"),
        (["replay", "--topic", "webhooks.retell"],
         "Error: give exactly one of --from-offset and --from-time"),
        (["replay", "--topic", "webhooks.retell", "--from-time", "monday"],
         "Error: --from-time: 'monday' is not an ISO-8601 time (e.g. 2026-01-05T17:00:00Z)"),
        (["replay", "--topic", "webhooks.retell", "--from-offset", "9", "--to-offset", "3"],
         "Error: --to-offset 3 is before --from-offset 9"),
        (["replay", "--topic", "webhooks.dlq", "--from-offset", "0"],
         "Error: --topic must be webhooks.retell or webhooks.calcom, got 'webhooks.dlq'"),
        (["replay", "--topic", "retell", "--from-offset", "0", "--partition", "-1"],
         "Error: --partition must be 0 or more, got -1"),
        (["dlq", "list", "--since", "last week"],
         "Error: --since: 'last week' is not an ISO-8601 time (e.g. 2026-01-05T17:00:00Z)"),
        (["dlq", "redrive", "--since", "x", "--dry-run"],
         "Error: --since: 'x' is not an ISO-8601 time (e.g. 2026-01-05T17:00:00Z)"),
        (["dlq", "show", "one:two"],
         "Error: 'one:two' is not PARTITION:OFFSET (e.g. 3:1042) or OFFSET"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_error_line(run: object, args: list[str], error: str) -> None:
    code, out, err = run(*args)  # type: ignore[operator]
    assert code == 2, (out, err)
    assert [line for line in err.splitlines() if line.startswith("Error:")] == [error]
    assert "Traceback" not in err and out == ""


def test_unreachable_services_are_one_line(run: object) -> None:
    code, out, err = run("replay", "--topic", "retell", "--from-offset", "0")  # type: ignore[operator]
    assert code == 1 and out == ""
    assert err.startswith("switchboard: MySQL unreachable") and err.count("\n") == 1
    code, out, err = run("events", "show", "retell", "call_ended:x")  # type: ignore[operator]
    assert code == 1 and err.startswith("switchboard: MySQL unreachable")
    code, out, err = run("dlq", "show", "0:1")  # type: ignore[operator]
    assert code == 1 and err.startswith("switchboard: Kafka unreachable at 127.0.0.1:1")
    assert err.count("\n") == 1
