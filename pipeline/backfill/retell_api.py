"""Retell's REST API, the two calls the backfill needs (docs/providers.md).

* ``POST /v3/list-calls``: calls whose ``end_timestamp`` (epoch ms) lies in the window and
  whose status is final, ascending, paged with the opaque ``pagination_key`` until
  ``has_more`` is false. Filtering on the end, not the start: a call that never connected
  has no ``start_timestamp`` but still owes a ``call_ended``.
* ``GET /v2/get-call/{call_id}``: the whole call. List items leave the transcript fields
  out, so this is fetched only for calls whose ``call_ended`` must be written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from pipeline.backfill.transport import ProviderApiError, Transport

FINAL_STATUSES = ("ended", "error", "not_connected")
MAX_PAGE = 1000  # the API's documented maximum for `limit`


def list_body(since_ms: int, until_ms: int, limit: int) -> dict[str, Any]:
    """The ``list-calls`` request body for one window (both ends inclusive)."""
    return {
        "filter_criteria": {
            "end_timestamp": {"type": "range", "op": "bt", "value": [since_ms, until_ms]},
            "call_status": {"type": "enum", "op": "in", "value": list(FINAL_STATUSES)},
        },
        "sort_order": "ascending",
        "limit": limit,
    }


class RetellApi:
    def __init__(self, transport: Transport, *, page_size: int = MAX_PAGE) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be 1-{MAX_PAGE}")
        self.transport = transport
        self.page_size = page_size

    async def ended_calls(
        self, since_ms: int, until_ms: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of calls that ended in ``[since_ms, until_ms]``."""
        body = list_body(since_ms, until_ms, self.page_size)
        seen_keys: set[str] = set()
        while True:
            page = await self.transport.post_json("/v3/list-calls", body)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise ProviderApiError("retell list-calls: the answer has no `items` list")
            items = [item for item in page["items"] if _is_call(item)]
            if len(items) != len(page["items"]):
                raise ProviderApiError("retell list-calls: an item has no call_id")
            yield items
            if not page.get("has_more"):
                return
            key = page.get("pagination_key")
            if not isinstance(key, str) or not key or key in seen_keys:
                raise ProviderApiError("retell list-calls: has_more without a new pagination_key")
            seen_keys.add(key)
            body = {**body, "pagination_key": key}

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """The full call (with its transcript), or None if Retell no longer has it."""
        call = await self.transport.get_json(
            f"/v2/get-call/{quote(call_id, safe='')}", missing_ok=True
        )
        if call is None:
            return None
        if not _is_call(call) or call["call_id"] != call_id:
            raise ProviderApiError("retell get-call: the answer is not the requested call")
        return dict(call)


def _is_call(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("call_id"), str) and bool(item["call_id"])
