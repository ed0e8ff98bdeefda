"""Issue 13, defect 8: the demo script never prints its secrets nor passes them on a
command line (where ``ps`` shows them), and the secrets it makes up are random, kept in a
file only its user can read.

The real ``scripts/demo.sh start``, ``traffic`` and ``stop`` run against this test's
database, topics and ports (``DEMO_VAR_DIR`` keeps its files in a temp dir); the
``switchboard`` binary it runs is a wrapper that records every command line.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.settings import Settings
from testbed.services import SWITCHBOARD, free_port, settings_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.sh"
WELL_KNOWN = ("demo-retell-key", "demo-calcom-secret", "demo-analyst-token", "demo-calcom-api-key")
NAMES = ("RETELL_API_KEY", "CALCOM_WEBHOOK_SECRET", "SWITCHBOARD_ANALYST_TOKENS", "CALCOM_API_KEY")


def wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A ``switchboard`` that appends its arguments to a file, then runs the real one."""
    argv_log = tmp_path / "argv.log"
    script = tmp_path / "switchboard"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {SWITCHBOARD} "$@"\n')
    script.chmod(0o755)
    return script, argv_log


def demo(args: str, env: dict[str, str], timeout: float = 240.0) -> str:
    done = subprocess.run(
        [str(DEMO), args], env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"demo.sh {args} exited {done.returncode}:\n{output[-3000:]}"
    return output


def test_the_demo_shows_no_secret_on_screen_in_logs_or_on_a_command_line(
    stack_settings: Settings, tmp_path: Path
) -> None:
    given = {name: f"s3cret-{name.lower()}-{secrets.token_hex(8)}" for name in NAMES}
    settings = stack_settings.with_(
        ingress_port=free_port(),
        worker_port=free_port(),
        data_dir=tmp_path / "data",
        routing_refresh_s=1.0,
    )
    binary, argv_log = wrapper(tmp_path)
    env = settings_env(settings)
    env.update(given)
    env.update(
        DEMO_VAR_DIR=str(tmp_path / "var"),
        DEMO_SWITCHBOARD=str(binary),
        DEMO_CALLS="12",
        DEMO_RATE="200",
        DEMO_COMPANIES="2",
        DEMO_SEED="7",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    shown = ""
    try:
        shown += demo("start", env)
        shown += demo("traffic", env)
    finally:
        shown += demo("stop", env)
    assert "verify-run" in argv_log.read_text() and "Dashboard page" in shown
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "var").rglob("*.log"))
    for name, value in given.items():
        assert value not in shown, f"demo.sh printed {name}"
        assert value not in argv_log.read_text(), f"a command line carried {name}"
        assert value not in logs, f"a log carried {name}"
    # The environment's secrets were used: nothing was made up beside them.
    assert not (tmp_path / "var" / "demo.env").read_text().strip()


def test_secrets_the_environment_lacks_are_random_and_private(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in NAMES}
    env["DEMO_VAR_DIR"] = str(tmp_path / "var")
    runs = [
        subprocess.run([str(DEMO), "status"], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    kept = tmp_path / "var" / "demo.env"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in kept.read_text().splitlines()
    )
    assert sorted(values) == sorted(NAMES)  # made once, reused by the second run
    for value in values.values():
        assert value not in WELL_KNOWN and len(value) >= 32
        assert all(value not in run.stdout + run.stderr for run in runs)
