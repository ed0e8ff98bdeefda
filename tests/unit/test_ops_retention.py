"""Where ``webhook_events`` rows may end: never before a record that could re-apply them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.errors import ConfigError
from pipeline.ops.retention import RetentionReport, TopicRetention, horizon
from pipeline.settings import Settings, load_settings

DAY_MS = 86_400_000
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _topic(days: float, segment_days: float = 7) -> TopicRetention:
    ms = -1 if days < 0 else int(days * DAY_MS)
    return TopicRetention("t", "ok", ms, ms, True, int(segment_days * DAY_MS))


def test_the_floor_is_the_configured_row_retention() -> None:
    before, why = horizon(Settings(), [_topic(30), _topic(7)], NOW)
    assert before == datetime(2026, 6, 1, 12) - timedelta(days=430)
    assert "SWITCHBOARD_EVENTS_RETENTION_DAYS" in why


def test_a_longer_topic_retention_moves_the_horizon_back() -> None:
    before, why = horizon(Settings(), [_topic(30), _topic(450, segment_days=1)], NOW)
    assert before == datetime(2026, 6, 1, 12) - timedelta(days=452)
    assert "longest topic retention" in why


def test_records_kept_forever_keep_every_row() -> None:
    before, why = horizon(Settings(), [_topic(30), _topic(-1)], NOW)
    assert before is None and "forever" in why


def test_events_retention_must_outlive_topic_retention() -> None:
    with pytest.raises(ConfigError, match="EVENTS_RETENTION_DAYS must be at least"):
        load_settings({"SWITCHBOARD_TOPIC_RETENTION_DAYS": "420"})
    with pytest.raises(ConfigError, match="between 401"):
        load_settings({"SWITCHBOARD_EVENTS_RETENTION_DAYS": "100"})
    assert load_settings({"SWITCHBOARD_EVENTS_RETENTION_DAYS": "500"}).events_retention_days == 500


def test_report_lines() -> None:
    report = RetentionReport(dry_run=True, topic_days=30, events_days=430)
    report.topics = [
        TopicRetention("webhooks.retell", "kept", 5 * DAY_MS, 5 * DAY_MS, True, DAY_MS),
        TopicRetention("webhooks.calcom", "would set", 30 * DAY_MS, None, False, DAY_MS),
    ]
    report.horizon, report.why, report.rows_deleted = "2025-04-27T12:00:00Z", "kept 430 d", 12
    assert report.lines() == [
        "webhooks.retell                          retention      5 d  kept: an operator's "
        "value on the topic (--release TOPIC to replace it)",
        "webhooks.calcom                          retention     30 d  would be set to "
        "switchboard's",
        "webhook_events: would delete 12 row(s) processed before 2025-04-27T12:00:00Z (kept 430 d)",
    ]
