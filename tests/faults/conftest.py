"""The fault suite (docs/reliability.md): each test breaks one thing during a simulated run
and ends with ``verify-run`` finding zero differences and the dead-letter topic holding only
the deliberately bad events. Brokers and databases that a test stops or kills are its own
(``scripts/stack.sh kafka-instance``, ``kafka-cluster``, ``mariadb-instance``): the shared
Kafka on 9092 and MariaDB on 3306 are only ever used, never stopped.

Every test here is marked ``long`` (minutes each); ``make test-faults`` runs them and then
``python -m tests.faults.report`` writes their figures into docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.settings import Settings, load_settings
from tests.faults.harness import World


@pytest.fixture
def shared() -> Settings:
    """The shared services' settings (used, never stopped)."""
    return load_settings(os.environ)


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    """Worlds a test builds are torn down (processes stopped, database dropped) at its end."""
    made: list[World] = []
    yield made
    for world in made:
        world.close()
