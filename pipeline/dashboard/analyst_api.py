"""A small client for the analyst API of docs/analyst.md (the worker's web server).

Used by ``switchboard dashboard`` and ``switchboard reconcile --worker-url``. Blocking
(``urllib``): both are one-shot commands. Every failure is one :class:`AnalystApiError`
with a one-line message an operator can act on; the token never appears in it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.dashboard.tokens import plain_token
from pipeline.errors import SwitchboardError
from pipeline.settings import Settings

HINTS = {
    400: "the API refused the request",
    401: "the analyst API refused the token (check --token or SWITCHBOARD_ANALYST_TOKENS)",
    404: "no data for this company (or not one this token may read)",
    503: "the worker is still recovering its tables; retry in a few seconds",
}


class AnalystApiError(SwitchboardError):
    """The API answered with an error, or could not be reached (``status`` is None)."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def default_url(settings: Settings) -> str:
    return f"http://{settings.worker_host}:{settings.worker_port}"


def default_token(settings: Settings) -> str | None:
    """The first plain (development) token of SWITCHBOARD_ANALYST_TOKENS; None when every
    entry is hashed: a client then needs ``--token``."""
    for entry in settings.analyst_tokens:
        token = plain_token(entry.reveal())
        if token:
            return token
    return None


def iso(at: datetime) -> str:
    """Naive UTC → ``2026-11-28T16:00:00Z`` (no ``+``, which a query string turns into a space)."""
    return at.isoformat(timespec="seconds") + "Z"


@dataclass
class AnalystClient:
    base_url: str
    token: str
    timeout: float = 15.0

    def summary(self, company_id: int) -> dict[str, Any]:
        return self._get(f"/api/v1/companies/{company_id}/summary")

    def companies(self) -> dict[str, Any]:
        return self._get("/api/v1/companies")

    def series(
        self,
        company_id: int,
        granularity: str,
        start: datetime,
        end: datetime,
        *,
        table_only: bool = False,
        group_by: str | None = None,
    ) -> dict[str, Any]:
        """``table_only``: the workers' table itself, never the MySQL fallback (reconcile
        compares the table with MySQL; a fallback answer would compare MySQL with itself)."""
        params = {"granularity": granularity, "from": iso(start), "to": iso(end)}
        if table_only:
            params["source"] = "table"
        if group_by:
            params["group_by"] = group_by
        query = urllib.parse.urlencode(params)
        return self._get(f"/api/v1/companies/{company_id}/series?{query}")

    def _get(self, path: str) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + path
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            hint = HINTS.get(exc.code, "the API answered with an error")
            suffix = f": {detail}" if detail and exc.code == 400 else ""
            raise AnalystApiError(f"{hint} (HTTP {exc.code}){suffix}", status=exc.code) from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AnalystApiError(f"worker unreachable at {self.base_url}: {reason}") from exc
        except ValueError as exc:
            raise AnalystApiError(f"the worker at {self.base_url} answered with non-JSON") from exc
        if not isinstance(body, dict):
            raise AnalystApiError(f"the worker at {self.base_url} answered with unexpected JSON")
        return body


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return " ".join(str(detail).split())[:200] if detail else ""
