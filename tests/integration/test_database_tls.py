"""MySQL over TLS against a real server: a private MariaDB (scripts/stack.sh mariadb-instance
--tls) with a certificate from a CA made for this test and ``require_secure_transport``.
``switchboard migrate`` and the engines we build reach it with ``?ssl_ca=`` in
SWITCHBOARD_DATABASE_URL, the session really is encrypted, and a server whose certificate
another CA signed is refused with one line (docs/deploy.md, "MySQL 8 and TLS"). Without
``ssl_ca`` PyMySQL still encrypts when the server offers TLS, but verifies nothing: only
``ssl_ca`` protects against a server in the middle.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import text

from pipeline import database
from pipeline.settings import Secret, Settings
from testbed import services
from testbed.certs import Authority
from testbed.mariadb_instance import private_mariadb


def migrate(settings: Settings, url: str) -> subprocess.CompletedProcess[str]:
    env = {**services.settings_env(settings), "SWITCHBOARD_DATABASE_URL": url}
    return subprocess.run(
        [services.SWITCHBOARD, "migrate"], env=env, capture_output=True, text=True, timeout=180
    )


def test_tls_server_reached_with_ssl_ca_and_refused_when_another_ca_signed_it(
    stack_settings: Settings, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    authority = Authority(tls)
    authority.issue("server", hosts=("127.0.0.1",))
    stranger = Authority(tmp_path / "stranger", name="another-ca")
    with private_mariadb("tls-mariadb", tmp_path / "mariadb", tls=tls) as server:
        plain = server.url
        verified = f"{plain}?ssl_ca={authority.cafile}"

        refused = migrate(stack_settings, f"{plain}?ssl_ca={stranger.cafile}")
        assert refused.returncode != 0, refused.stdout
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "switchboard:switchboard" not in refused.stderr, "no credentials in the error"

        done = migrate(stack_settings, verified)
        assert done.returncode == 0, done.stderr

        settings = stack_settings.with_(database_url=Secret(verified))
        engine = database.create_db_engine(settings, pool_size=1)
        try:
            with engine.connect() as conn:
                cipher = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()[1]
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            assert cipher, "the session is not encrypted"
            assert version, "migrate did not reach head"
        finally:
            engine.dispose()
