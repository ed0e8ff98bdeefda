"""Comparing what the pipeline wrote with an expected-state file.

Reads MySQL (calls, appointments, webhook_events, dashboard_buckets) and, optionally, the
analyst API's series endpoint, and lists every difference as (entity, field, expected,
actual). Rows are fetched by the ids the file names, in chunks; rows that carry the run's
id prefix but are not expected (a forged event let through, say) are differences too.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, and_, select

from pipeline.database import check_database, create_db_engine
from pipeline.errors import SwitchboardError
from pipeline.models import (
    COUNTERS,
    DECIMAL_COUNTERS,
    appointments,
    calls,
    customers,
    dashboard_buckets,
    webhook_events,
)
from pipeline.settings import Settings
from testbed.simulator.expected import CENTS, FORMAT, BucketKey, counters_json, zero_counters
from testbed.simulator.model import iso_dt

CHUNK = 500


@dataclass(frozen=True, slots=True)
class Difference:
    entity: str
    field: str
    expected: Any
    actual: Any

    def line(self) -> str:
        return f"{self.entity}: {self.field}: expected {self.expected!r}, got {self.actual!r}"


class ExpectedFileError(SwitchboardError, ValueError):
    """The expected-state file cannot be read or is not one of ours."""


def load_expected(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ExpectedFileError(f"cannot read {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ExpectedFileError(f"{path} is not JSON: {exc.msg}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExpectedFileError(f"{path} is not a {FORMAT} file")
    return doc


def parse_time(value: str) -> datetime:
    """ISO (``Z`` or offset) → naive UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _when(value: datetime | None) -> str | None:
    return iso_dt(value) if value is not None else None


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _cents(value: Any) -> str | None:
    return None if value is None else str(Decimal(value).quantize(CENTS))


# ---- MySQL -------------------------------------------------------------------------------


def check_database_rows(
    conn: Connection,
    doc: Mapping[str, Any],
    *,
    strict_inbound: bool = False,
    notes: list[str] | None = None,
) -> list[Difference]:
    """Every difference between MySQL and ``doc``.

    A missing ``call_inbound`` record is a difference only with ``strict_inbound``: the
    ingress answers it without waiting on Kafka (docs/ingress.md), so its record is best effort.
    Otherwise it is added to ``notes``.
    """
    diffs: list[Difference] = []
    diffs += _check_calls(conn, doc)
    diffs += _check_appointments(conn, doc)
    for diff, best_effort in _check_events(conn, doc):
        if best_effort and diff.actual is None and not strict_inbound:
            if notes is not None:
                notes.append(diff.entity)
        else:
            diffs.append(diff)
    diffs += _check_buckets(conn, doc)
    return diffs


def _compare(
    diffs: list[Difference], entity: str, expected: Mapping[str, Any], actual: Mapping[str, Any]
) -> None:
    for name, want in expected.items():
        got = actual.get(name)
        if got != want:
            diffs.append(Difference(entity, name, want, got))


def _check_calls(conn: Connection, doc: Mapping[str, Any]) -> list[Difference]:
    wanted: Mapping[str, Mapping[str, Any]] = doc.get("calls", {})
    query = select(calls, customers.c.phone.label("customer_phone")).select_from(
        calls.outerjoin(customers, customers.c.id == calls.c.customer_id)
    )
    found: dict[str, Any] = {}
    for chunk in _chunks(sorted(wanted)):
        for row in conn.execute(query.where(calls.c.retell_call_id.in_(chunk))).mappings():
            found[row["retell_call_id"]] = row
    prefix = doc.get("id_prefixes", {}).get("calls")
    if prefix:
        for row in conn.execute(query.where(calls.c.retell_call_id.like(f"{prefix}%"))).mappings():
            found.setdefault(row["retell_call_id"], row)
    diffs: list[Difference] = []
    for call_id, expected in sorted(wanted.items()):
        match = found.get(call_id)
        if match is None:
            diffs.append(Difference(f"call {call_id}", "row", "present", "missing"))
            continue
        row = match
        transcript = row["transcript"]
        _compare(
            diffs,
            f"call {call_id}",
            expected,
            {
                "company_id": row["company_id"],
                "branch_id": row["branch_id"],
                "status": row["status"],
                "direction": row["direction"],
                "started_at": _when(row["started_at"]),
                "ended_at": _when(row["ended_at"]),
                "duration_ms": row["duration_ms"],
                "disconnection_reason": row["disconnection_reason"],
                "in_voicemail": _flag(row["in_voicemail"]),
                "successful": _flag(row["successful"]),
                "sentiment": row["sentiment"],
                "cost_cents": _cents(row["cost_cents"]),
                "transfer_destination": row["transfer_destination"],
                "customer_phone": row["customer_phone"],
                "transcript_chars": len(transcript) if transcript else None,
            },
        )
    for call_id in sorted(set(found) - set(wanted)):
        diffs.append(Difference(f"call {call_id}", "row", "absent", "present"))
    return diffs


def _check_appointments(conn: Connection, doc: Mapping[str, Any]) -> list[Difference]:
    wanted: Mapping[str, Mapping[str, Any]] = doc.get("appointments", {})
    linked = calls.alias("linked")
    query = select(appointments, linked.c.retell_call_id.label("linked_call")).select_from(
        appointments.outerjoin(linked, linked.c.id == appointments.c.call_id)
    )
    found: dict[str, Any] = {}
    for chunk in _chunks(sorted(wanted)):
        for row in conn.execute(query.where(appointments.c.calcom_uid.in_(chunk))).mappings():
            found[row["calcom_uid"]] = row
    prefix = doc.get("id_prefixes", {}).get("appointments")
    if prefix:
        for row in conn.execute(
            query.where(appointments.c.calcom_uid.like(f"{prefix}%"))
        ).mappings():
            found.setdefault(row["calcom_uid"], row)
    diffs: list[Difference] = []
    for uid, expected in sorted(wanted.items()):
        match = found.get(uid)
        if match is None:
            diffs.append(Difference(f"appointment {uid}", "row", "present", "missing"))
            continue
        row = match
        _compare(
            diffs,
            f"appointment {uid}",
            expected,
            {
                "company_id": row["company_id"],
                "status": row["status"],
                "starts_at": _when(row["starts_at"]),
                "booked_at": _when(row["booked_at"]),
                "cancelled_at": _when(row["cancelled_at"]),
                "rescheduled_at": _when(row["rescheduled_at"]),
                "rescheduled_from_uid": row["rescheduled_from_uid"],
                "no_show_at": _when(row["no_show_at"]),
                "retell_call_id": row["retell_call_id"],
                "call": row["linked_call"],
            },
        )
    for uid in sorted(set(found) - set(wanted)):
        diffs.append(Difference(f"appointment {uid}", "row", "absent", "present"))
    return diffs


def _check_events(conn: Connection, doc: Mapping[str, Any]) -> list[tuple[Difference, bool]]:
    """Status differences, each with whether the event is best effort (a call_inbound)."""
    by_provider: dict[str, dict[str, str]] = {}
    best_effort: set[tuple[str, str]] = set()
    for item in doc.get("events", []):
        by_provider.setdefault(item["provider"], {})[item["event_id"]] = item["status"]
        if item.get("best_effort"):
            best_effort.add((item["provider"], item["event_id"]))
    diffs: list[tuple[Difference, bool]] = []
    for provider, wanted in sorted(by_provider.items()):
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(wanted)):
            rows = conn.execute(
                select(webhook_events.c.event_id, webhook_events.c.status).where(
                    and_(
                        webhook_events.c.provider == provider, webhook_events.c.event_id.in_(chunk)
                    )
                )
            )
            found.update({r.event_id: r.status for r in rows})
        for event_id, status in sorted(wanted.items()):
            got = found.get(event_id)
            if got != status:
                diff = Difference(f"event {provider}:{event_id}", "status", status, got)
                diffs.append((diff, (provider, event_id) in best_effort))
    return diffs


def read_buckets(
    conn: Connection, windows: Mapping[int, Mapping[str, tuple[datetime, datetime]]]
) -> dict[BucketKey, dict[str, Any]]:
    """The dashboard_buckets rows inside each company's windows (also the run's baseline)."""
    out: dict[BucketKey, dict[str, Any]] = {}
    for company_id, by_granularity in windows.items():
        for granularity, (low, high) in by_granularity.items():
            rows = conn.execute(
                select(dashboard_buckets).where(
                    dashboard_buckets.c.company_id == company_id,
                    dashboard_buckets.c.granularity == granularity,
                    dashboard_buckets.c.bucket_start >= low,
                    dashboard_buckets.c.bucket_start < high,
                )
            ).mappings()
            for row in rows:
                out[(company_id, granularity, row["bucket_start"])] = {n: row[n] for n in COUNTERS}
    return out


def _windows(doc: Mapping[str, Any]) -> dict[int, dict[str, tuple[datetime, datetime]]]:
    return {
        int(cid): {g: (parse_time(lo), parse_time(hi)) for g, (lo, hi) in by_g.items()}
        for cid, by_g in doc.get("bucket_windows", {}).items()
    }


def _expected_buckets(doc: Mapping[str, Any]) -> dict[BucketKey, dict[str, Any]]:
    return {
        (int(b["company_id"]), b["granularity"], parse_time(b["bucket_start"])): {
            n: b[n] for n in COUNTERS
        }
        for b in doc.get("buckets", [])
    }


def _compare_buckets(
    entity: str,
    expected: Mapping[BucketKey, Mapping[str, Any]],
    actual: Mapping[BucketKey, Mapping[str, Any]],
) -> list[Difference]:
    diffs: list[Difference] = []
    zero = counters_json(zero_counters())
    for key in sorted(set(expected) | set(actual)):
        want = expected.get(key, zero)
        got = counters_json(actual[key]) if key in actual else zero
        for name in COUNTERS:
            if _norm(name, want[name]) != _norm(name, got[name]):
                cid, granularity, start = key
                diffs.append(
                    Difference(
                        f"{entity} {cid}/{granularity}/{iso_dt(start)}", name, want[name], got[name]
                    )
                )
    return diffs


def _norm(name: str, value: Any) -> Any:
    if name in DECIMAL_COUNTERS:
        try:
            return Decimal(str(value)).quantize(CENTS)
        except InvalidOperation:
            return value
    return value


def _check_buckets(conn: Connection, doc: Mapping[str, Any]) -> list[Difference]:
    return _compare_buckets("bucket", _expected_buckets(doc), read_buckets(conn, _windows(doc)))


# ---- the analyst API ---------------------------------------------------------------------


def check_api(
    api_url: str, token: str, doc: Mapping[str, Any], *, timeout_s: float = 10.0
) -> list[Difference]:
    """The series endpoint must report the expected counters for every bucket in the windows."""
    expected = _expected_buckets(doc)
    diffs: list[Difference] = []
    for company_id, by_granularity in sorted(_windows(doc).items()):
        for granularity, (low, high) in sorted(by_granularity.items()):
            query = urllib.parse.urlencode(
                {"granularity": granularity, "from": _z(low), "to": _z(high)}
            )
            url = f"{api_url.rstrip('/')}/api/v1/companies/{company_id}/series?{query}"
            entity = f"api company {company_id} {granularity}"
            status, body = _get(url, token, timeout_s)
            if status == 404:
                body = {"buckets": []}
            elif (
                status != 200
                or not isinstance(body, dict)
                or not isinstance(body.get("buckets"), list)
            ):
                diffs.append(Difference(entity, "http_status", 200, status))
                continue
            actual: dict[BucketKey, dict[str, Any]] = {}
            for item in body["buckets"]:
                start = parse_time(str(item.get("start")))
                actual[(company_id, granularity, start)] = {
                    n: item.get(n, 0) or 0 for n in COUNTERS
                }
            want = {
                k: v
                for k, v in expected.items()
                if k[0] == company_id and k[1] == granularity and low <= k[2] < high
            }
            actual = {k: v for k, v in actual.items() if low <= k[2] < high}
            diffs += _compare_buckets("api bucket", want, actual)
    return diffs


def _z(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(url: str, token: str, timeout_s: float) -> tuple[int | None, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - operator URL
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        return None, str(exc)


# ---- polling -----------------------------------------------------------------------------


def verify(
    settings: Settings,
    expected_path: Path,
    *,
    api_url: str | None = None,
    token: str | None = None,
    timeout: float = 0.0,
    poll_s: float = 2.0,
    on_poll: Callable[[list[Difference], float], None] | None = None,
    strict_inbound: bool = False,
    notes: list[str] | None = None,
) -> list[Difference]:
    """Compare until there is no difference or ``timeout`` seconds have passed.

    The pipeline is asynchronous: right after a run the worker may still be applying, and
    the analyst API may lag MySQL, so differences are re-checked until they settle.
    """
    doc = load_expected(expected_path)
    engine = create_db_engine(settings, pool_size=1)
    try:
        check_database(engine)
        started = time.monotonic()
        while True:
            last = time.monotonic() - started >= timeout
            found_notes: list[str] = []
            with engine.connect() as conn:
                diffs = check_database_rows(
                    conn, doc, strict_inbound=strict_inbound, notes=found_notes
                )
            if api_url and (last or not diffs):
                diffs += check_api(api_url, token or "", doc)
            elapsed = time.monotonic() - started
            if not diffs or last:
                if notes is not None:
                    notes.extend(found_notes)
                return diffs
            if on_poll is not None:
                on_poll(diffs, elapsed)
            time.sleep(min(poll_s, max(0.0, timeout - elapsed)))
    finally:
        engine.dispose()
