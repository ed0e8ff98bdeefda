"""Security suites (docs/security.md): the integration fixtures (a per-test database and
topic prefix on the real Kafka and MariaDB) plus the one world of real processes that the
hostile-input suites share."""

from __future__ import annotations

from tests.integration.conftest import db_settings, engine, stack_settings

__all__ = ["db_settings", "engine", "stack_settings"]
