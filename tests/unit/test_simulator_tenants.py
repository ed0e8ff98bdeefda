"""Tenant generation and the tenants file (the MySQL upsert is an integration test)."""

from __future__ import annotations

import orjson
import pytest

from testbed.simulator import tenants
from testbed.simulator.tenants import E164, TenantFileError


def test_generation_is_seeded_and_realistic() -> None:
    first = tenants.generate(12, seed=3)
    assert first == tenants.generate(12, seed=3)
    assert first != tenants.generate(12, seed=4)
    assert len(first) == 12 and len({c.name for c in first}) == 12
    zones = {c.timezone for c in first}
    assert {"America/Los_Angeles", "Europe/Berlin", "Asia/Tokyo"} <= zones
    branches = [b for c in first for b in c.branches]
    assert all(1 <= len(c.branches) <= 3 for c in first)
    assert all(any(b.is_active for b in c.branches) for c in first)
    assert all(E164.fullmatch(b.phone_number) for b in branches)
    assert len({b.phone_number for b in branches}) == len(branches)
    assert len({b.calcom_event_type_id for b in branches}) == len(branches)
    assert len({b.retell_agent_id for b in branches}) == len(branches)


def test_small_seeds_still_reach_far_time_zones() -> None:
    assert [c.timezone for c in tenants.generate(3, seed=99)] == [
        "America/Los_Angeles",
        "Europe/Berlin",
        "Asia/Tokyo",
    ]


def test_file_round_trip() -> None:
    items = tenants.generate(4, seed=1)
    assert tenants.from_json(tenants.to_json(items)) == items


def test_a_bare_list_and_defaults_are_accepted() -> None:
    raw = orjson.dumps(
        [{"name": "Solo", "branches": [{"name": "Main", "phone_number": "+14155550100"}]}]
    )
    [company] = tenants.from_json(raw)
    assert (company.timezone, company.is_active) == ("UTC", True)
    assert company.branches[0].retell_agent_id is None and company.branches[0].is_active


def test_every_problem_is_reported_at_once() -> None:
    raw = orjson.dumps(
        {
            "companies": [
                {
                    "name": "A",
                    "timezone": "Mars/Olympus",
                    "branches": [
                        {"name": "x", "phone_number": "4155550100"},
                        {"name": "y", "phone_number": "+14155550101", "calcom_event_type_id": 7},
                    ],
                },
                {
                    "name": "",
                    "branches": [
                        {
                            "name": "z",
                            "phone_number": "+14155550101",
                            "calcom_event_type_id": 7,
                            "is_active": "yes",
                        }
                    ],
                },
            ]
        }
    )
    with pytest.raises(TenantFileError) as err:
        tenants.from_json(raw, "t.json")
    message = str(err.value)
    for fragment in (
        "Mars/Olympus",
        "not E.164",
        "companies[1].name",
        "phone_number also at",
        "calcom_event_type_id also at",
        "is_active: must be true or false",
    ):
        assert fragment in message


def test_not_json_is_one_clear_error() -> None:
    with pytest.raises(TenantFileError, match="not valid JSON"):
        tenants.from_json(b"{nope")


def test_with_ids_numbers_companies_and_branches_in_order() -> None:
    items = tenants.with_ids(tenants.generate(3, seed=1), first_company=10, first_branch=100)
    assert [c.id for c in items] == [10, 11, 12]
    branch_ids = [b.id for c in items for b in c.branches]
    assert branch_ids == list(range(100, 100 + len(branch_ids)))
    assert all(b.company_id == c.id for c in items for b in c.branches)
