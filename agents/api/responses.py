"""Answers of the analyst API: the JSON error body, CSV, and the source headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

SOURCE_HEADER = "X-Switchboard-Source"  # table | mysql
FALLBACK_HEADER = "X-Switchboard-Fallback"  # why MySQL answered: recovering | owner_unavailable
HOP_HEADER = "X-Switchboard-Routed"  # set on a request one worker forwards to another
# Headers of the owner's answer that a forwarding worker passes on.
PASSED_ON = (SOURCE_HEADER, FALLBACK_HEADER, "Retry-After", "Content-Disposition")


def json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=dict(headers or {}),
    )


def error(status: int, code: str, detail: str, *, retry_after: bool = False) -> web.Response:
    headers = {"Retry-After": "2"} if retry_after else {}
    return json({"error": code, "detail": detail}, status, headers)


def wants_csv(query: Mapping[str, str], accept: str) -> bool:
    fmt = query.get("format")
    if fmt is not None:
        return fmt == "csv"
    return any(part.split(";")[0].strip() == "text/csv" for part in accept.split(","))


def csv_response(body: bytes, filename: str, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        body=body,
        content_type="text/csv",
        charset="utf-8",
        headers={**headers, "Content-Disposition": f'attachment; filename="{filename}"'},
    )
