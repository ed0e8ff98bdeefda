"""The tenant directory: the companies and branches that traffic is attributed to.

Two jobs: read and write the tenants JSON file (``switchboard tenants import``), and upsert
tenants into MySQL (SQLAlchemy Core). The upsert is keyed by the branch phone number (unique,
docs/data-model.md), so importing the same file twice changes nothing the second time. A
company is found through any of its branches' numbers; a company listed without branches
can only be matched by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import Connection, literal_column, select
from sqlalchemy.exc import IntegrityError

from pipeline.errors import SwitchboardError
from pipeline.models import branches, companies

E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class TenantFileError(SwitchboardError, ValueError):
    """The tenants file (or the import it asks for) is invalid; the message says where."""


# ---- tenants -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Branch:
    name: str
    phone_number: str
    retell_agent_id: str | None = None
    calcom_event_type_id: int | None = None
    is_active: bool = True
    id: int | None = None  # None until it is in MySQL
    company_id: int | None = None


@dataclass(frozen=True, slots=True)
class Company:
    name: str
    timezone: str = "UTC"
    is_active: bool = True
    branches: tuple[Branch, ...] = ()
    id: int | None = None

    def routable_branches(self) -> tuple[Branch, ...]:
        """Branches that docs/data-model.md attributes traffic to: active, of an active company."""
        if not self.is_active:
            return ()
        return tuple(b for b in self.branches if b.is_active)


# ---- the file ----------------------------------------------------------------------------


def to_json(items: Sequence[Company]) -> bytes:
    """The tenants file: ``{"companies": [{name, timezone, is_active, branches: [...]}]}``."""
    return orjson.dumps(
        {
            "companies": [
                {
                    "name": c.name,
                    "timezone": c.timezone,
                    "is_active": c.is_active,
                    "branches": [
                        {
                            "name": b.name,
                            "phone_number": b.phone_number,
                            "retell_agent_id": b.retell_agent_id,
                            "calcom_event_type_id": b.calcom_event_type_id,
                            "is_active": b.is_active,
                        }
                        for b in c.branches
                    ],
                }
                for c in items
            ]
        },
        option=orjson.OPT_INDENT_2,
    )


def read_file(path: Path) -> list[Company]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TenantFileError(f"cannot read {path}: {exc.strerror}") from exc
    return from_json(raw, str(path))


def from_json(raw: bytes, where: str = "tenants file") -> list[Company]:
    """Parse and validate a tenants file; every problem is reported at once."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TenantFileError(f"{where}: not valid JSON ({exc.msg})") from exc
    items = doc.get("companies") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise TenantFileError(f'{where}: expected {{"companies": [...]}} or a list of companies')
    problems: list[str] = []
    result = [_company(item, f"companies[{i}]", problems) for i, item in enumerate(items)]
    phones: dict[str, str] = {}
    event_types: dict[int, str] = {}
    for ci, company in enumerate(result):
        for bi, branch in enumerate(company.branches):
            here = f"companies[{ci}].branches[{bi}]"
            if branch.phone_number in phones:
                problems.append(f"{here}: phone_number also at {phones[branch.phone_number]}")
            phones.setdefault(branch.phone_number, here)
            if branch.calcom_event_type_id is not None:
                if branch.calcom_event_type_id in event_types:
                    other = event_types[branch.calcom_event_type_id]
                    problems.append(f"{here}: calcom_event_type_id also at {other}")
                event_types.setdefault(branch.calcom_event_type_id, here)
    if problems:
        raise TenantFileError(f"{where}: " + "; ".join(problems))
    return result


def _company(item: Any, where: str, problems: list[str]) -> Company:
    if not isinstance(item, dict):
        problems.append(f"{where}: must be an object")
        return Company(name="?")
    name = _text(item, "name", where, problems) or "?"
    timezone = item.get("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        problems.append(f"{where}.timezone: {timezone!r} is not an IANA time zone")
        timezone = "UTC"
    raw_branches = item.get("branches", [])
    if not isinstance(raw_branches, list):
        problems.append(f"{where}.branches: must be a list")
        raw_branches = []
    return Company(
        name=name,
        timezone=timezone,
        is_active=_flag(item, "is_active", where, problems),
        branches=tuple(
            _branch(b, f"{where}.branches[{i}]", problems) for i, b in enumerate(raw_branches)
        ),
    )


def _branch(item: Any, where: str, problems: list[str]) -> Branch:
    if not isinstance(item, dict):
        problems.append(f"{where}: must be an object")
        return Branch(name="?", phone_number="?")
    phone = _text(item, "phone_number", where, problems) or "?"
    if phone != "?" and not E164.fullmatch(phone):
        problems.append(f"{where}.phone_number: {phone!r} is not E.164 (+ and 7-15 digits)")
    agent = item.get("retell_agent_id")
    if agent is not None and (not isinstance(agent, str) or not agent):
        problems.append(f"{where}.retell_agent_id: must be a non-empty string or null")
        agent = None
    event_type = item.get("calcom_event_type_id")
    if event_type is not None and (isinstance(event_type, bool) or not isinstance(event_type, int)):
        problems.append(f"{where}.calcom_event_type_id: must be an integer or null")
        event_type = None
    return Branch(
        name=_text(item, "name", where, problems) or "?",
        phone_number=phone,
        retell_agent_id=agent,
        calcom_event_type_id=event_type,
        is_active=_flag(item, "is_active", where, problems),
    )


def _text(item: dict[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}.{key}: must be a non-empty string")
        return None
    return value.strip()


def _flag(item: dict[str, Any], key: str, where: str, problems: list[str]) -> bool:
    value = item.get(key, True)
    if not isinstance(value, bool):
        problems.append(f"{where}.{key}: must be true or false")
        return True
    return value


# ---- MySQL -------------------------------------------------------------------------------


@dataclass
class ImportReport:
    companies_created: int = 0
    companies_updated: int = 0
    companies_unchanged: int = 0
    branches_created: int = 0
    branches_updated: int = 0
    branches_unchanged: int = 0
    company_ids: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"companies: {self.companies_created} created, {self.companies_updated} updated, "
            f"{self.companies_unchanged} unchanged; branches: {self.branches_created} created, "
            f"{self.branches_updated} updated, {self.branches_unchanged} unchanged"
        )


_NOW: Any = literal_column("CURRENT_TIMESTAMP(3)")


def import_tenants(conn: Connection, items: Iterable[Company]) -> ImportReport:
    """Upsert companies and branches, keyed by branch phone number; idempotent.

    Runs in the caller's transaction: a conflict (two companies claiming one file entry's
    numbers, an event type id used by another branch) raises TenantFileError and the caller
    rolls everything back.
    """
    report = ImportReport()
    for company in items:
        company_id = _upsert_company(conn, company, report)
        report.company_ids.append(company_id)
        for branch in company.branches:
            _upsert_branch(conn, company_id, branch, report)
    return report


def _upsert_company(conn: Connection, company: Company, report: ImportReport) -> int:
    phones = [b.phone_number for b in company.branches]
    owners: set[int] = set()
    if phones:
        owners = set(
            conn.execute(
                select(branches.c.company_id).where(branches.c.phone_number.in_(phones))
            ).scalars()
        )
    elif company.name:
        first = conn.execute(
            select(companies.c.id).where(companies.c.name == company.name).order_by(companies.c.id)
        ).first()
        owners = {first[0]} if first else set()
    if len(owners) > 1:
        raise TenantFileError(
            f"company {company.name!r}: its branch numbers belong to several companies "
            f"({', '.join(str(o) for o in sorted(owners))})"
        )
    values = {"name": company.name, "timezone": company.timezone, "is_active": company.is_active}
    if not owners:
        result = conn.execute(companies.insert().values(**values))
        report.companies_created += 1
        return int(result.inserted_primary_key[0])  # type: ignore[index]
    company_id = owners.pop()
    current = conn.execute(
        select(companies.c.name, companies.c.timezone, companies.c.is_active).where(
            companies.c.id == company_id
        )
    ).one()
    if (current.name, current.timezone, bool(current.is_active)) == tuple(values.values()):
        report.companies_unchanged += 1
    else:
        conn.execute(
            companies.update().where(companies.c.id == company_id).values(**values, updated_at=_NOW)
        )
        report.companies_updated += 1
    return company_id


def _upsert_branch(conn: Connection, company_id: int, branch: Branch, report: ImportReport) -> None:
    values = {
        "company_id": company_id,
        "name": branch.name,
        "retell_agent_id": branch.retell_agent_id,
        "calcom_event_type_id": branch.calcom_event_type_id,
        "is_active": branch.is_active,
    }
    current = conn.execute(
        select(
            branches.c.id,
            branches.c.company_id,
            branches.c.name,
            branches.c.retell_agent_id,
            branches.c.calcom_event_type_id,
            branches.c.is_active,
        ).where(branches.c.phone_number == branch.phone_number)
    ).first()
    try:
        if current is None:
            conn.execute(branches.insert().values(phone_number=branch.phone_number, **values))
            report.branches_created += 1
            return
        existing = {
            "company_id": current.company_id,
            "name": current.name,
            "retell_agent_id": current.retell_agent_id,
            "calcom_event_type_id": current.calcom_event_type_id,
            "is_active": bool(current.is_active),
        }
        if existing == values:
            report.branches_unchanged += 1
            return
        conn.execute(
            branches.update().where(branches.c.id == current.id).values(**values, updated_at=_NOW)
        )
        report.branches_updated += 1
    except IntegrityError as exc:
        raise TenantFileError(
            f"branch {branch.phone_number}: calcom_event_type_id {branch.calcom_event_type_id} "
            "already belongs to another branch"
        ) from exc


def load_tenants(conn: Connection) -> tuple[Company, ...]:
    """Every company with its branches (ids included), in id order."""
    rows = conn.execute(select(branches).order_by(branches.c.id)).mappings().all()
    by_company: dict[int, list[Branch]] = {}
    for row in rows:
        by_company.setdefault(row["company_id"], []).append(
            Branch(
                id=row["id"],
                company_id=row["company_id"],
                name=row["name"],
                phone_number=row["phone_number"],
                retell_agent_id=row["retell_agent_id"],
                calcom_event_type_id=row["calcom_event_type_id"],
                is_active=bool(row["is_active"]),
            )
        )
    return tuple(
        Company(
            id=row["id"],
            name=row["name"],
            timezone=row["timezone"],
            is_active=bool(row["is_active"]),
            branches=tuple(by_company.get(row["id"], ())),
        )
        for row in conn.execute(select(companies).order_by(companies.c.id)).mappings()
    )


def with_ids(
    items: Sequence[Company], first_company: int = 1, first_branch: int = 1
) -> tuple[Company, ...]:
    """The same tenants with ids assigned in order, as if imported into an empty database.

    For tests and offline scenario generation, where no MySQL hands out ids.
    """
    out = []
    branch_id = first_branch
    for offset, company in enumerate(items):
        company_id = first_company + offset
        numbered = []
        for branch in company.branches:
            numbered.append(replace(branch, id=branch_id, company_id=company_id))
            branch_id += 1
        out.append(replace(company, id=company_id, branches=tuple(numbered)))
    return tuple(out)
