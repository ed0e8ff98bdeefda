"""A worker's bind address and the URL it advertises to the others are separate, and a
worker refuses to start with a URL that nobody can connect to (0.0.0.0, ::, empty)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.app import advertised_url, create_faust_app
from agents.main import cli
from pipeline.cli import register_commands
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load_settings


def problems_of(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value.problems


@pytest.mark.parametrize(
    "url",
    [
        "http://0.0.0.0:6066",
        "http://[::]:6066",
        "worker-0:6066",
        "ftp://worker-0:6066",
        "http://:6066",
        "http://worker-0:99999",
    ],
)
def test_an_unusable_advertised_url_is_a_config_problem(url: str) -> None:
    (problem,) = problems_of({"SWITCHBOARD_WORKER_ADVERTISED_URL": url})
    assert problem.startswith("SWITCHBOARD_WORKER_ADVERTISED_URL ")


def test_bind_everywhere_advertise_a_name(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SWITCHBOARD_WORKER_HOST": "0.0.0.0",
            "SWITCHBOARD_WORKER_PORT": "6066",
            "SWITCHBOARD_WORKER_ADVERTISED_URL": "http://worker-1.workers.svc:6066/",
        }
    ).with_(data_dir=tmp_path)
    assert settings.worker_url() == "http://worker-1.workers.svc:6066"
    app = create_faust_app(settings, store="memory://")
    assert str(app.conf.canonical_url) == "http://worker-1.workers.svc:6066"
    assert app.conf.web_bind == "0.0.0.0"
    assert app.conf.web_port == 6066


def test_without_an_advertised_url_the_bind_address_is_advertised(tmp_path: Path) -> None:
    settings = Settings(worker_host="10.0.0.7", worker_port=7000, data_dir=tmp_path)
    assert advertised_url(settings) == "http://10.0.0.7:7000"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_a_worker_bound_everywhere_without_an_advertised_url_refuses_to_start(
    host: str, tmp_path: Path
) -> None:
    settings = Settings(worker_host=host, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="SWITCHBOARD_WORKER_ADVERTISED_URL"):
        create_faust_app(settings, store="memory://")


def test_the_worker_command_says_so_in_one_line_before_connecting(tmp_path: Path) -> None:
    register_commands()
    result = CliRunner().invoke(
        cli,
        ["worker"],
        env={
            "SWITCHBOARD_WORKER_HOST": "0.0.0.0",
            # Unreachable services: the refusal must come before any connection attempt.
            "SWITCHBOARD_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "SWITCHBOARD_DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1:1/x",
            "SWITCHBOARD_DATA_DIR": str(tmp_path),
        },
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "SWITCHBOARD_WORKER_ADVERTISED_URL" in lines[0], result.output
    assert "http://0.0.0.0:6066" in lines[0]
