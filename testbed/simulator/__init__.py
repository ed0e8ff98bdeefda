"""Traffic simulator: tenants, seeded busy-day scenarios, HTTP delivery, expected state.

Layout (the flow of a run, top to bottom):

* ``tenants``   the tenants file, a seeded tenant generator, the MySQL upsert and loader;
* ``scenario``  pure, seeded generation of the story and its delivery order;
* ``bodies``    the webhook bodies that tell the story, in the providers' shapes;
* ``sender``    signing at send time, pacing, retries of 503s, routing-answer checks;
* ``expected``  the independent oracle: rows and counters per docs/data-model.md;
* ``verify``    comparing MySQL and the analyst API with an expected-state file;
* ``run``       ``run_simulation`` tying it together (what ``switchboard simulate`` does).

For tests and benchmarks::

    summary = run_simulation(settings, SimulationConfig(ScenarioConfig(seed=7, calls=50),
                                                        expected_path=Path("expected.json")))
    differences = verify(settings, Path("expected.json"), timeout=60)
"""

from __future__ import annotations

from testbed.simulator.run import (
    SimulationConfig,
    SimulationError,
    Summary,
    run_simulation,
    simulate,
)
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.sender import SendConfig
from testbed.simulator.verify import Difference, verify

__all__ = [
    "Difference",
    "ScenarioConfig",
    "SendConfig",
    "SimulationConfig",
    "SimulationError",
    "Summary",
    "generate",
    "run_simulation",
    "simulate",
    "verify",
]
