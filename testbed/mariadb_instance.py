"""A private MariaDB server for tests that stop it, make it read-only or revoke grants:
started through ``scripts/stack.sh mariadb-instance`` on a free port with its data under the
test's temporary directory, so the shared server (and everyone else's tests) never notice.
It has the same ``switchboard`` user and grants as the shared one; ``sql`` runs statements
as its root (over its socket, through the script)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.settings import Secret, Settings
from testbed.services import free_port

STACK = Path(__file__).resolve().parents[1] / "scripts" / "stack.sh"


class PrivateMariaDB:
    def __init__(
        self, name: str, directory: Path, port: int | None = None, *, tls: Path | None = None
    ) -> None:
        self.name = name
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls  # ca.crt, server.crt, server.key: TCP clients must then use TLS

    @property
    def url(self) -> str:
        return f"mysql+pymysql://switchboard:switchboard@127.0.0.1:{self.port}/switchboard"

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at this server's ``switchboard`` database."""
        return base.with_(database_url=Secret(self.url))

    def run(self, action: str, *extra: str, timeout_s: float = 180.0) -> str:
        args = [
            str(STACK), "mariadb-instance", self.name, action,
            "--port", str(self.port), "--dir", str(self.directory),
            *(["--tls", str(self.tls)] if self.tls else []), *extra,
        ]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise AssertionError(
                f"stack.sh mariadb-instance {action} failed:\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def start(self) -> None:
        self.run("start")

    def stop(self) -> None:
        self.run("stop")

    def kill(self) -> None:
        self.run("kill")

    def sql(self, statement: str) -> str:
        return self.run("sql", statement)


@contextmanager
def private_mariadb(
    name: str, directory: Path, *, tls: Path | None = None
) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(name, directory, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.kill()
