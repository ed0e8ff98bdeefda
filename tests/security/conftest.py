"""Security suites (docs/security.md): the integration fixtures (a per-test database and
topic prefix on the real Kafka and MariaDB) plus ``world``: ONE ingress and ONE worker,
started once for the whole package and shared by the hostile-input suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import db_settings, engine, stack_settings
from tests.security.world import World, running_world

__all__ = ["db_settings", "engine", "stack_settings", "world"]


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("world")) as started:
        yield started
        started.assert_alive()
