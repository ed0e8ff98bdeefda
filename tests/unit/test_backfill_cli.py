"""``switchboard backfill`` on the command line: usage errors, a disabled provider, bad
provider settings and an unreachable MySQL each give one line and a non-zero exit, and
never a key. No service is needed (an unreachable MySQL is a closed port)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prometheus_client import generate_latest

from pipeline.backfill.metrics import BackfillMetrics
from tests.unit.test_cli import assert_one_line_failure, clean_env, closed_port, run

__all__ = ["closed_port"]
CALCOM_KEY = "cal_live_cli-key-5be1"


def test_since_is_required_without_every() -> None:
    result = run(["backfill", "--provider", "retell"], clean_env())
    assert result.returncode == 2
    assert "Error: --since is required" in result.stderr


def test_bad_durations_and_combinations_are_usage_errors() -> None:
    for args in (
        ["--every", "10x"],
        ["--every", "10m", "--dry-run"],
        ["--since", "yesterday"],
        ["--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"],
    ):
        result = run(
            ["backfill", "--provider", "calcom", *args], clean_env(CALCOM_API_KEY=CALCOM_KEY)
        )
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and CALCOM_KEY not in result.stderr


def test_a_provider_without_its_key_is_disabled_in_one_line() -> None:
    env = clean_env()
    result = run(["backfill", "--provider", "calcom", "--since", "2026-01-01T00:00:00Z"], env)
    line = assert_one_line_failure(result, code=1)
    assert line == "switchboard: calcom backfill is disabled: CALCOM_API_KEY is not set"
    env.pop("RETELL_API_KEY")
    result = run(["backfill", "--provider", "retell", "--every", "1m"], env)
    assert_one_line_failure(result, code=1)
    assert "RETELL_API_KEY" in result.stderr


def test_bad_provider_settings_are_config_errors_without_the_values() -> None:
    env = clean_env(
        RETELL_API_URL="ftp://user:pw-4c2a@api.example",
        CALCOM_API_VERSION="latest",
        CALCOM_API_KEY=CALCOM_KEY,
    )
    line = assert_one_line_failure(
        run(["backfill", "--provider", "calcom", "--since", "2026-01-01"], env), code=2
    )
    assert "RETELL_API_URL must be an http:// or https:// URL" in line
    assert "CALCOM_API_VERSION" in line
    assert "pw-4c2a" not in line and CALCOM_KEY not in line


def test_mysql_unreachable_is_one_line_and_no_key(closed_port: int) -> None:
    env = clean_env(
        CALCOM_API_KEY=CALCOM_KEY,
        SWITCHBOARD_DATABASE_URL=f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/x",
    )
    result = run(["backfill", "--provider", "calcom", "--since", "2026-01-01T00:00:00Z"], env)
    line = assert_one_line_failure(result, code=1)
    assert "MySQL unreachable" in line
    assert CALCOM_KEY not in result.stdout + result.stderr


def test_metrics_can_be_written_for_a_textfile_collector(tmp_path: Path) -> None:
    metrics = BackfillMetrics()
    metrics.events.labels("calcom", "BOOKING_CREATED").inc(3)
    metrics.observe_state(
        "calcom",
        covered_until=datetime(2026, 1, 1, 12),
        last_success_at=datetime(2026, 1, 1, 12, 1),
        last_written=3,
    )
    path = tmp_path / "switchboard_backfill.prom"
    metrics.write_textfile(path)
    text = path.read_text()
    assert 'switchboard_backfill_events_total{kind="BOOKING_CREATED",provider="calcom"} 3.0' in text
    assert (
        'switchboard_backfill_watermark_timestamp_seconds{provider="calcom"} 1.7672688e+09' in text
    )
    assert 'switchboard_backfill_last_success_timestamp_seconds{provider="calcom"}' in text
    assert 'switchboard_backfill_watermark_age_seconds{provider="calcom"}' in text


def test_the_provider_api_settings() -> None:
    from pipeline.settings import Settings, load_settings

    defaults = load_settings({})
    assert (defaults.retell_api_url, defaults.calcom_api_url) == (
        "https://api.retellai.com",
        "https://api.cal.com",
    )
    assert defaults.calcom_api_key is None and defaults.retell_api_key() is None
    assert defaults.calcom_api_version == "2024-08-13"
    settings = load_settings(
        {
            "RETELL_API_URL": "http://127.0.0.1:8091/",
            "CALCOM_API_URL": "https://cal.internal/api",
            "CALCOM_API_KEY": CALCOM_KEY,
            "CALCOM_API_VERSION": "2026-05-01",
            "RETELL_API_KEY": "first-key-1a,second-key-2b",
        }
    )
    assert settings.retell_api_url == "http://127.0.0.1:8091"  # no trailing slash
    assert settings.calcom_api_url == "https://cal.internal/api"
    assert settings.calcom_api_version == "2026-05-01"
    key = settings.retell_api_key()
    assert key is not None and key.reveal() == "first-key-1a"
    assert settings.calcom_api_key is not None and settings.calcom_api_key.reveal() == CALCOM_KEY
    assert CALCOM_KEY not in repr(settings) and "first-key-1a" not in repr(settings)
    assert isinstance(settings, Settings)


def test_prepared_counters_start_at_zero_so_the_first_lost_event_is_an_increase() -> None:
    metrics = BackfillMetrics()
    metrics.prepare("retell", {"call_ended", "call_analyzed"})
    text = generate_latest(metrics.registry).decode()
    assert 'switchboard_backfill_events_total{kind="call_ended",provider="retell"} 0.0' in text
    assert 'switchboard_backfill_unattributable_total{provider="retell"} 0.0' in text
    assert 'switchboard_backfill_runs_total{outcome="failure",provider="retell"} 0.0' in text
    assert "calcom" not in text
