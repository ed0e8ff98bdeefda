"""``scripts/stack.sh`` starts the shared MariaDB whatever other MariaDB servers run.

``start-stop-daemon --start --exec mariadbd`` counts any process of that program as this
one, so with a private server running (a fault test's, a developer's second instance) it
printed "mariadbd already running" and started nothing. A CI run lost every test after
`test_mariadb_down_for_20s_mid_stream_loses_nothing` that way: the shared server was
stopped by the test and could not be started again beside a private one. The shared
server is now told apart by its own pid file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from testbed.mariadb_instance import STACK, private_mariadb


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STACK), *args], capture_output=True, text=True, timeout=180)


def test_the_shared_mariadb_starts_beside_a_private_server(tmp_path: Path) -> None:
    try:
        with private_mariadb("beside", tmp_path / "mariadb"):
            assert stack("mariadb-stop").returncode == 0
            started = stack("mariadb-start")
            assert started.returncode == 0, started.stdout + started.stderr
            assert stack("status", "mariadb").returncode == 0
    finally:
        stack("mariadb-start")  # whatever happened above, the shared server runs after
