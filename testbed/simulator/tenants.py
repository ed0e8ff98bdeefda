"""Generated tenants for simulated traffic; the file format and the MySQL upsert are the
production directory's (``pipeline.tenants``), re-exported here for the simulator's callers."""

from __future__ import annotations

from random import Random

from pipeline.tenants import (
    E164,
    Branch,
    Company,
    ImportReport,
    TenantFileError,
    from_json,
    import_tenants,
    load_tenants,
    read_file,
    to_json,
    with_ids,
)
from testbed.simulator import vocab

# The simulator's tenants are the production tenant files: these are re-exported.
__all__ = [
    "E164",
    "Branch",
    "Company",
    "ImportReport",
    "TenantFileError",
    "from_json",
    "import_tenants",
    "load_tenants",
    "read_file",
    "to_json",
    "with_ids",
    "generate",
    "unique_phone",
]

# ---- generation --------------------------------------------------------------------------


def generate(count: int, seed: int) -> list[Company]:
    """``count`` companies with 1–3 branches each, the same for the same seed.

    The first three companies are in America/Los_Angeles, Europe/Berlin and Asia/Tokyo, so
    even a small demo has day buckets far from UTC in both directions. Roughly one company
    in seven keeps an inactive branch (calls to it must come out unroutable).
    """
    if count < 1:
        raise TenantFileError("--companies must be at least 1")
    rng = Random(f"tenants:{seed}")
    names: set[str] = set()
    phones: set[str] = set()
    event_types = rng.sample(range(100_000, 10_000_000), k=count * 3)
    result: list[Company] = []
    for index in range(count):
        kind = vocab.BUSINESSES[rng.randrange(len(vocab.BUSINESSES))]
        name = ""
        for attempt in range(1000):
            place = vocab.PLACES[rng.randrange(len(vocab.PLACES))]
            name = f"{place} {rng.choice(kind[2])}" + (
                f" {attempt // 50 + 2}" if attempt >= 50 else ""
            )
            if name not in names:
                break
        names.add(name)
        zone = vocab.TIMEZONES[index] if index < 3 else rng.choice(vocab.TIMEZONES)
        tz = zone[0]
        districts = rng.sample(vocab.DISTRICTS, k=rng.randint(1, 3))
        inactive = len(districts) > 1 and rng.random() < 0.15
        company_branches = []
        for bi, district in enumerate(districts):
            company_branches.append(
                Branch(
                    name=f"{name} {district}",
                    phone_number=unique_phone(rng, tz, phones),
                    retell_agent_id=f"agent_{rng.getrandbits(96):024x}",
                    calcom_event_type_id=event_types[index * 3 + bi],
                    is_active=not (inactive and bi == len(districts) - 1),
                )
            )
        result.append(
            Company(name=name, timezone=tz, is_active=True, branches=tuple(company_branches))
        )
    return result


def unique_phone(rng: Random, timezone: str, taken: set[str]) -> str:
    """A random E.164 number of the time zone's country, not yet in ``taken`` (added to it)."""
    cc, prefixes, length = vocab.COUNTRY_BY_TIMEZONE.get(timezone, ("1", ("555",), 10))
    while True:
        prefix = rng.choice(prefixes)
        rest = length - len(prefix)
        number = f"+{cc}{prefix}{rng.randrange(10 ** (rest - 1), 10**rest)}"
        if number not in taken:
            taken.add(number)
            return number
