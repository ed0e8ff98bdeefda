"""Fault 3: the database goes away three ways during one simulated run, on a private MariaDB
(``scripts/stack.sh mariadb-instance``): stopped for 30 s, set read-only for 30 s, the
application user's grants revoked (its connections killed, as a DBA cutting access would)
for 30 s and restored. The workers wait each one out: nothing is dead-lettered but the
deliberately bad events, nothing is lost, nothing is counted twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.settings import Settings
from testbed.mariadb_instance import PrivateMariaDB, private_mariadb
from testbed.simulator.scenario import ScenarioConfig
from tests.faults.harness import Figures, World

# Minutes each, on private services: `long`; beyond the suite's default 300 s limit.
pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

COMMAND = ".venv/bin/pytest -q tests/faults/test_database_outages.py"
OUTAGE_S = 30.0
USERS = "'switchboard'@'127.0.0.1', 'switchboard'@'localhost'"
GRANTS = "`switchboard\\_%`.*"


def kill_connections(server: PrivateMariaDB) -> int:
    """KILL every connection of the application user; how many there were."""
    ids = server.sql(
        "SELECT id FROM information_schema.processlist WHERE user = 'switchboard'"
    ).split()
    ids = [i for i in ids if i.isdigit()]
    if ids:
        server.sql(" ".join(f"KILL CONNECTION {i};" for i in ids))
    return len(ids)


def test_mariadb_stopped_read_only_and_grants_revoked(
    shared: Settings, tmp_path: Path, worlds: list[World]
) -> None:
    figures = Figures(
        "database-outages",
        "MariaDB stopped, read-only, grants revoked",
        f"on a private MariaDB, during one run: stopped for {OUTAGE_S:.0f} s (clean shutdown) "
        f"and started; `SET GLOBAL read_only=1` for {OUTAGE_S:.0f} s; the application user's "
        f"grants revoked and its connections killed for {OUTAGE_S:.0f} s, then granted again",
        times=3,
        command=COMMAND,
    )
    with private_mariadb("fault-mariadb", tmp_path / "mariadb") as server:
        world = World(server.settings(shared), tmp_path, "database-outages")
        worlds.append(world)
        world.ingress()
        worker = world.worker()
        worker.wait_ready(120)
        simulation = world.simulate(
            ScenarioConfig(seed=71, calls=90, duplicate_share=0.2, reorder_share=0.5), rate=7
        )
        world.send_poison(1)

        def outage(name: str, start: Callable[[], None], end: Callable[[], None]) -> None:
            time.sleep(4)  # traffic flows and applies between the outages
            start()
            time.sleep(OUTAGE_S)
            worker._check_alive()
            end()
            ended, before = time.monotonic(), world.processed()
            figures.recover_s.append(world.resumed(ended, before))
            figures.notes.append(f"{name}: applying again {figures.recover_s[-1]} s after it ended")

        outage("stopped", server.stop, server.start)
        outage(
            "read-only",
            lambda: server.sql("SET GLOBAL read_only = 1"),
            lambda: server.sql("SET GLOBAL read_only = 0"),
        )

        def revoke() -> None:
            server.sql(f"REVOKE ALL PRIVILEGES ON {GRANTS} FROM {USERS}")
            killed = kill_connections(server)
            figures.notes.append(f"grants revoked: {killed} connections of the user killed")

        outage(
            "grants revoked",
            revoke,
            lambda: server.sql(f"GRANT ALL PRIVILEGES ON {GRANTS} TO {USERS}"),
        )
        summary = simulation.result()
        world.send_poison(1)
        log = worker.log_path.read_text(errors="replace")
        waits = sorted(
            {
                reason
                for reason in (
                    "mysql_2003_connection_refused",
                    "mysql_2013_connection_lost",
                    "mysql_2006_server_gone",
                    "connection_lost",
                    "mysql_1290_read_only",
                    "mysql_1044_database_access_denied",
                    "mysql_1142_table_access_denied",
                    "mysql_1045_access_denied",
                    "mysql_1927_connection_killed",
                    "pool_timeout",
                )
                if f"database unavailable ({reason})" in log
            }
        )
        figures.notes.append("the worker waited on: " + ", ".join(waits))
        world.finish(figures, summary, api_url=worker.url)
        assert "mysql_1290_read_only" in waits
        assert any("access_denied" in w for w in waits), waits
