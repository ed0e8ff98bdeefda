"""The customers one batch touches, decided in memory: found by phone, then email; created
when missing; email-only customers absorbed by a sighting that has both (docs/data-model.md,
"Customers"). Pure: the load phase hands in the rows it locked, the writer inserts, updates
and deletes what :class:`CustomerBook` says.

Every customer has a *handle*: its id for a stored row, a negative number for a row this
batch creates. Rows of calls and appointments point to handles until the writer knows the
real ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.apply.merge import merge_customer, new_customer
from pipeline.apply.rows import CustomerRow


@dataclass(frozen=True, slots=True)
class Sighting:
    """Who an event is about, as far as the customers table is concerned."""

    company_id: int
    phone: str | None
    email: str | None
    name: str | None
    seen_at: datetime | None


@dataclass
class CustomerBook:
    before: dict[int, CustomerRow] = field(default_factory=dict)
    rows: dict[int, CustomerRow] = field(default_factory=dict)  # handle → row
    absorbed: dict[int, int] = field(default_factory=dict)  # handle → the handle absorbing it
    by_phone: dict[tuple[int, str], int] = field(default_factory=dict)
    by_email: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    _next_new: int = -1

    @classmethod
    def of(cls, stored: Iterable[CustomerRow]) -> CustomerBook:
        book = cls()
        for row in sorted(stored, key=lambda r: r.id or 0):
            assert row.id is not None
            book.before[row.id] = row
            book._index(row.id, row)
        return book

    def _index(self, handle: int, row: CustomerRow) -> None:
        self.rows[handle] = row
        if row.phone:
            self.by_phone[(row.company_id, row.phone)] = handle
        if row.email:
            handles = self.by_email.setdefault((row.company_id, row.email), [])
            if handle not in handles:
                handles.append(handle)

    def _find(self, company_id: int, phone: str | None, email: str | None) -> int | None:
        if phone and (company_id, phone) in self.by_phone:
            return self.by_phone[(company_id, phone)]
        if email:
            # Several customers may share an email (a family): choose by the rows' content,
            # never by which was loaded or created first, so a replay picks the same one.
            candidates = sorted(
                self.by_email.get((company_id, email), []),
                key=lambda h: (self.rows[h].phone is not None, self.rows[h].phone or ""),
            )
            for handle in candidates:
                if not phone or self.rows[handle].phone is None:
                    return handle
        return None

    def sight(self, seen: Sighting) -> int:
        """Fold one sighting in; returns the handle of its customer.

        A sighting with both phone and email also absorbs email-only customers of that
        email (a booking seen before we knew the phone), so the customers end up the same
        whatever order the events came in.
        """
        company_id, phone, email = seen.company_id, seen.phone, seen.email
        handle = self._find(company_id, phone, email)
        current = self.rows[handle] if handle is not None else new_customer(company_id)
        merged = merge_customer(
            current, phone=phone, email=email, name=seen.name, seen_at=seen.seen_at
        )
        if handle is None:
            handle = self._next_new
            self._next_new -= 1
        if phone and email:
            for other in list(self.by_email.get((company_id, email), [])):
                row = self.rows[other]
                if other == handle or row.phone is not None:
                    continue
                for at in (row.first_seen_at, row.last_seen_at):
                    merged = merge_customer(merged, name=row.name, seen_at=at)
                self.by_email[(company_id, email)].remove(other)
                del self.rows[other]
                self.absorbed[other] = handle
        self._index(handle, merged)
        return handle

    def final(self, handle: int | None) -> int | None:
        """The handle a customer reference ends up as (absorbed customers move)."""
        while handle is not None and handle in self.absorbed:
            handle = self.absorbed[handle]
        return handle

    @property
    def new(self) -> dict[int, CustomerRow]:
        """Rows to insert, by their (negative) handle."""
        return {h: r for h, r in self.rows.items() if h < 0}

    @property
    def changed(self) -> list[CustomerRow]:
        """Stored rows whose content the batch changed."""
        return [r for h, r in self.rows.items() if h > 0 and r != self.before.get(h)]

    @property
    def merged_away(self) -> list[tuple[CustomerRow, int]]:
        """Stored customers absorbed by another, each with the handle that absorbed it."""
        return [
            (self.before[old], self.final(old) or 0)
            for old in sorted(h for h in self.absorbed if h > 0)
        ]
