"""Tenant rows for tests: the fixtures' numbers, agents and event types belong to these."""

from __future__ import annotations

from sqlalchemy import Engine, insert

from pipeline.models import branches, companies

BAYVIEW = 1
OTHER = 2
# Numbers, agent and event types used by the provider fixtures (tests/fixtures/).
FIXTURE_NUMBER = "+14155550199"
FIXTURE_AGENT = "agent_8a1d4c2b9e7f"


def seed_fixture_tenants(engine: Engine, *, timezone: str = "America/Los_Angeles") -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(companies),
            [
                {"id": BAYVIEW, "name": "Bayview Dental", "timezone": timezone},
                {"id": OTHER, "name": "Other Salon", "timezone": "Europe/Berlin"},
            ],
        )
        conn.execute(
            insert(branches),
            [
                {
                    "id": 11,
                    "company_id": BAYVIEW,
                    "name": "Bayview Harbor",
                    "phone_number": FIXTURE_NUMBER,
                    "retell_agent_id": FIXTURE_AGENT,
                    "calcom_event_type_id": 901,
                },
                {
                    "id": 12,
                    "company_id": BAYVIEW,
                    "name": "Bayview Implants",
                    "phone_number": "+14155550198",
                    "retell_agent_id": "agent_implants",
                    "calcom_event_type_id": 905,
                },
                {
                    "id": 21,
                    "company_id": OTHER,
                    "name": "Other Salon Main",
                    "phone_number": "+4930555000",
                    "retell_agent_id": "agent_other",
                    "calcom_event_type_id": 700,
                },
            ],
        )
