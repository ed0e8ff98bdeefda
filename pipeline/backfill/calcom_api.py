"""Cal.com's API v2 bookings, pinned to ``cal-api-version: 2024-08-13`` by default (the version
whose ``GET /v2/bookings`` parameters we could read in Cal.com's code; docs/providers.md).

Three sweeps over the window find every booking that may owe a webhook:

* ``updated``: ``afterUpdatedAt``/``beforeUpdatedAt``, ``sortUpdatedAt=asc``: cancellations,
  rejections, confirmations and reschedules (which update the old booking);
* ``created``: ``afterCreatedAt``/``beforeCreatedAt``, ``sortCreated=asc``: new bookings,
  including those whose ``updatedAt`` is null;
* ``meetings``: ``afterStart``/``beforeEnd``, ``sortStart=asc``: meetings held in the window
  (a lookback before it), which owe ``MEETING_ENDED`` and may carry a no-show mark; marking an
  attendee does not touch the booking's ``updatedAt``.

``status`` is omitted, which means every status (``cancelled`` and ``rejected`` included).
Paging is by key, not by offset: each page asks for the items at or after the last sort
value seen (re-reading the ties at that value, whose order is not guaranteed; callers keep
one copy per uid). An offset (``skip``) alone would skip a booking whenever one that was
already read is updated mid-sweep and moves to the end; it is used only to step through
more than a page of bookings sharing one instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pipeline.backfill.transport import ProviderApiError, Transport
from pipeline.backfill.when import iso_ms, parse_iso

MAX_PAGE = 250  # `take` is 1-250 in 2024-08-13


@dataclass(frozen=True, slots=True)
class Sweep:
    name: str
    after: str  # the lower-bound parameter (inclusive)
    before: str  # the upper-bound parameter (inclusive)
    sort: str  # the sort parameter (asc)
    field: str  # the booking field that parameter sorts on


UPDATED = Sweep("updated", "afterUpdatedAt", "beforeUpdatedAt", "sortUpdatedAt", "updatedAt")
CREATED = Sweep("created", "afterCreatedAt", "beforeCreatedAt", "sortCreated", "createdAt")
MEETINGS = Sweep("meetings", "afterStart", "beforeEnd", "sortStart", "start")
SWEEPS = (UPDATED, CREATED, MEETINGS)


class CalcomApi:
    def __init__(self, transport: Transport, *, version: str, page_size: int = MAX_PAGE) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be 1-{MAX_PAGE}")
        self.transport = transport
        self.version = version
        self.page_size = page_size

    async def sweep(
        self, sweep: Sweep, since: datetime, until: datetime
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of bookings whose ``sweep.field`` lies in ``[since, until]``."""
        cursor, skip = since, 0
        while True:
            params = {
                sweep.after: iso_ms(cursor),
                sweep.before: iso_ms(until),
                sweep.sort: "asc",
                "take": str(self.page_size),
                "skip": str(skip),
            }
            items, more = self._page(await self.transport.get_json("/v2/bookings", params))
            yield items
            if not more or not items:
                return
            last = _sort_value(items[-1], sweep)
            if last < cursor:
                raise ProviderApiError(
                    f"calcom bookings: the {sweep.name} sweep went backwards (is {sweep.sort} "
                    "honoured by this cal-api-version?)"
                )
            if last > cursor:
                cursor, skip = last, 0  # re-read the ties at `last`: their order may vary
            else:
                skip += len(items)  # a page full of one instant: step through it by offset

    async def booking(self, uid: str) -> dict[str, Any] | None:
        """One booking by uid (a reschedule's other half), or None if it is gone."""
        answer = await self.transport.get_json(
            f"/v2/bookings/{quote(uid, safe='')}", missing_ok=True
        )
        if answer is None:
            return None
        data = answer.get("data") if isinstance(answer, dict) else None
        if isinstance(data, list):  # a recurring booking's uid returns its occurrences
            data = next((b for b in data if isinstance(b, dict) and b.get("uid") == uid), None)
        if not _is_booking(data):
            raise ProviderApiError("calcom booking: the answer has no booking in `data`")
        assert isinstance(data, dict)
        return data

    def _page(self, answer: Any) -> tuple[list[dict[str, Any]], bool]:
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise ProviderApiError("calcom bookings: the answer has no `data` list")
        pagination = answer.get("pagination")
        if not isinstance(pagination, dict) or not isinstance(pagination.get("hasNextPage"), bool):
            raise ProviderApiError(
                "calcom bookings: no pagination.hasNextPage in the answer; the backfill pages "
                f"the way cal-api-version 2024-08-13 does (CALCOM_API_VERSION is {self.version})"
            )
        items = answer["data"]
        if not all(_is_booking(item) for item in items):
            raise ProviderApiError("calcom bookings: an item has no uid")
        return items, pagination["hasNextPage"]


def _is_booking(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("uid"), str) and bool(item["uid"])


def _sort_value(item: dict[str, Any], sweep: Sweep) -> datetime:
    value = parse_iso(item.get(sweep.field))
    if value is None:
        raise ProviderApiError(
            f"calcom bookings: an item of the {sweep.name} sweep has no {sweep.field}"
        )
    return value
