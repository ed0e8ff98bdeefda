"""The ``switchboard`` command line (the README): ``--help`` everywhere; one line and a non-zero
exit on bad configuration or an unreachable Kafka/MySQL; never a traceback, never a secret.

The unreachable cases point at a socket that is bound but not listening, so the connection
is refused at once and no real service is needed: these are unit tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import agents.main
from pipeline.cli import cli, register_commands

SCRIPT = Path(sys.executable).with_name("switchboard")
SECRETS = {
    "RETELL_API_KEY": "retell-cli-secret-4e1d",
    "CALCOM_WEBHOOK_SECRET": "calcom-cli-secret-9a07",
    "SWITCHBOARD_ANALYST_TOKENS": "analyst-cli-token-c3b2",
}
PASSWORD = "db-cli-password-77f0"
# Every the README's configuration table variable plus the tuning knobs, so the caller's environment cannot leak in.
OWN_PREFIXES = ("SWITCHBOARD_", "RETELL_", "CALCOM_")


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    env.update(SECRETS)
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], code: int | None = None) -> str:  # fmt: skip
    """Non-zero exit, exactly one line on stderr, no traceback, no secret anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    if code is not None:
        assert result.returncode == code, output
    assert "Traceback" not in output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("switchboard: ")
    for secret in (*SECRETS.values(), PASSWORD):
        assert secret not in output
    return lines[0]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so no one else takes it), not
    listening. Race-free, unlike picking a free port and hoping it stays closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
    return paths


# ------------------------------------------------------------------ --help


def test_console_script_is_agents_main() -> None:
    assert SCRIPT.exists(), SCRIPT
    assert "agents.main" in SCRIPT.read_text()
    assert agents.main.main is not None


def test_every_command_has_help() -> None:
    register_commands()
    paths = command_paths(cli)
    # The commands of this issue and the worker (added by the entry point) at least.
    assert {("migrate",), ("topics",), ("worker",), ("ingress",)} <= set(paths)
    runner = CliRunner()
    env = {k: None for k in os.environ if k.startswith(OWN_PREFIXES)}
    for path in [(), *paths]:
        for flag in ("--help", "-h"):
            result = runner.invoke(cli, [*path, flag], prog_name="switchboard", env=env)
            assert result.exit_code == 0, (path, result.output, result.exception)
            assert result.output.startswith(f"Usage: switchboard {' '.join(path)}".rstrip())


def test_help_needs_no_valid_settings() -> None:
    """``--help`` must work on a box whose environment is broken (to find out why)."""
    register_commands()
    result = CliRunner().invoke(
        cli, ["migrate", "--help"], prog_name="switchboard", env={"SWITCHBOARD_WORKER_PORT": "abc"}
    )
    assert result.exit_code == 0, result.output


def test_console_script_help_in_a_subprocess() -> None:
    result = run(["--help"], clean_env(SWITCHBOARD_WORKER_PORT="abc"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for name in ("migrate", "topics", "worker", "ingress"):
        assert f"\n  {name} " in result.stdout
    version = run(["--version"], clean_env())
    assert version.returncode == 0 and "0.1.0" in version.stdout


def test_bad_arguments_exit_2_with_one_error_line() -> None:
    for args in (["migrate", "--no-such-option"], ["no-such-command"]):
        result = run(args, clean_env())
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr


# ------------------------------------------------------------------ bad configuration


def test_bad_env_var_is_one_config_line_exit_2() -> None:
    for command in ("migrate", "topics"):
        result = run([command], clean_env(SWITCHBOARD_WORKER_PORT="abc"))
        line = assert_one_line_failure(result, code=2)
        assert "SWITCHBOARD_WORKER_PORT" in line
        assert result.stdout == ""


def test_every_bad_var_is_on_the_one_line() -> None:
    result = run(
        ["migrate"],
        clean_env(
            SWITCHBOARD_WORKER_PORT="abc",
            SWITCHBOARD_INGRESS_PORT="0",
            SWITCHBOARD_KAFKA_BOOTSTRAP="kafka:port",
            SWITCHBOARD_DATABASE_URL=f"postgresql://u:{PASSWORD}@127.0.0.1/db",
        ),
    )
    line = assert_one_line_failure(result, code=2)
    for var in (
        "SWITCHBOARD_WORKER_PORT",
        "SWITCHBOARD_INGRESS_PORT",
        "SWITCHBOARD_KAFKA_BOOTSTRAP",
        "SWITCHBOARD_DATABASE_URL",
    ):
        assert var in line


# ------------------------------------------------------------------ unreachable services


def test_migrate_with_mysql_unreachable(closed_port: int) -> None:
    url = f"mysql+pymysql://switchboard:{PASSWORD}@127.0.0.1:{closed_port}/switchboard"
    # The command gives up by itself (the subprocess timeout only catches a hang).
    result = run(["migrate"], clean_env(SWITCHBOARD_DATABASE_URL=url), timeout=120)
    line = assert_one_line_failure(result, code=1)
    assert "MySQL" in line
    assert result.stdout == ""


@pytest.mark.parametrize("port", ["closed", "1"])
def test_topics_with_kafka_unreachable(closed_port: int, port: str) -> None:
    bootstrap = f"127.0.0.1:{closed_port if port == 'closed' else port}"
    url = f"mysql+pymysql://switchboard:{PASSWORD}@127.0.0.1:{closed_port}/switchboard"
    result = run(
        ["topics"],
        clean_env(SWITCHBOARD_KAFKA_BOOTSTRAP=bootstrap, SWITCHBOARD_DATABASE_URL=url),
        timeout=120,
    )
    line = assert_one_line_failure(result, code=1)
    assert "Kafka" in line and bootstrap in line
    assert result.stdout == ""


def test_topics_unreachable_in_process_leaves_logging_as_it_was(closed_port: int) -> None:
    """The command mutes aiokafka's logger only while it runs (CliRunner shares the process)."""
    import logging

    register_commands()
    before = logging.getLogger("aiokafka").level
    result = CliRunner().invoke(
        cli,
        ["topics"],
        prog_name="switchboard",
        env={"SWITCHBOARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port}"},
    )
    assert result.exit_code == 1, result.output
    assert logging.getLogger("aiokafka").level == before
