"""MySQL over TLS is configured in the URL (docs/deploy.md, "MySQL 8 and TLS"): the
``ssl_*`` query parameters reach PyMySQL as its ``ssl`` argument through every engine we
build, and a password given apart from the URL needs no escaping.

Against a real TLS server: tests/integration/test_database_tls.py.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from pipeline import database
from pipeline.settings import load_settings

CA = "/etc/switchboard/tls/rds-ca.pem"


def connect_kwargs(url: str) -> dict:
    settings = load_settings({"SWITCHBOARD_DATABASE_URL": url})
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        _, kwargs = engine.dialect.create_connect_args(engine.url)
        return kwargs
    finally:
        engine.dispose()


def test_ssl_ca_in_the_url_turns_tls_on_with_verification() -> None:
    kwargs = connect_kwargs(
        f"mysql+pymysql://sb:pw@db.example.internal:3306/switchboard?ssl_ca={CA}"
    )
    assert kwargs["ssl"] == {"ca": CA}
    assert (kwargs["host"], kwargs["database"]) == ("db.example.internal", "switchboard")


def test_client_certificates_and_hostname_check_pass_through() -> None:
    kwargs = connect_kwargs(
        "mysql+pymysql://sb:pw@10.0.0.5/switchboard"
        f"?ssl_ca={CA}&ssl_cert=/tls/client.crt&ssl_key=/tls/client.key&ssl_check_hostname=false"
    )
    assert kwargs["ssl"] == {
        "ca": CA,
        "cert": "/tls/client.crt",
        "key": "/tls/client.key",
        "check_hostname": False,
    }


def test_without_ssl_parameters_there_is_no_tls_argument() -> None:
    assert "ssl" not in connect_kwargs("mysql+pymysql://sb:pw@db/switchboard")


def test_a_separate_password_needs_no_escaping_and_keeps_the_tls_parameters() -> None:
    settings = load_settings(
        {
            "SWITCHBOARD_DATABASE_URL": f"mysql+pymysql://sb@db:3306/switchboard?ssl_ca={CA}",
            "SWITCHBOARD_DATABASE_PASSWORD": "p@ss/w%rd:1",
        }
    )
    url = make_url(settings.database_url.reveal())
    assert (url.username, url.password, url.host) == ("sb", "p@ss/w%rd:1", "db")
    assert url.query["ssl_ca"] == CA
    assert "p@ss" not in repr(settings)
    # Alembic reads the same URL through ConfigParser (a % must survive interpolation).
    assert database.alembic_config(settings).get_main_option("sqlalchemy.url") == (
        settings.database_url.reveal()
    )
