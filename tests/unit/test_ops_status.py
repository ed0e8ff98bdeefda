"""The status screen from gathered facts, and a Faust member's advertised URL."""

from __future__ import annotations

import orjson
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from pipeline.ops.probes import Ingress, Worker
from pipeline.ops.status import PartitionLag, Status, _member, lines


def test_a_faust_member_names_its_url_and_partitions() -> None:
    metadata = ConsumerProtocolMemberMetadata(
        3, ["t.webhooks.retell"], orjson.dumps({"url": "http://10.0.0.7:6066/", "assignment": {}})
    ).encode()
    assignment = ConsumerProtocolMemberAssignment(
        3, [("t.webhooks.retell", [0, 1]), ("t.webhooks.calcom", [2])], b""
    ).encode()
    worker = _member(
        {
            "client_id": "faust-0.15.3",
            "client_host": "/10.0.0.7",
            "member_metadata": metadata,
            "member_assignment": assignment,
        }
    )
    assert worker.url == "http://10.0.0.7:6066" and worker.partitions == 3
    assert worker.member == "faust-0.15.3@10.0.0.7"
    other = _member(
        {
            "client_id": "x",
            "client_host": "/h",
            "member_metadata": b"\x00",
            "member_assignment": b"",
        }
    )
    assert other.url == "" and other.partitions is None  # not Faust: still listed


def test_the_screen() -> None:
    status = Status(
        at="2026-01-05T17:00:00+00:00",
        group="switchboard",
        group_state="Stable",
        lag=[
            PartitionLag("webhooks.retell", 0, 1200, 1200, 0),
            PartitionLag("webhooks.retell", 1, 900, 850, 50),
            PartitionLag("webhooks.calcom", 0, 0, None, 0),
        ],
        workers=[
            Worker("http://w1:6066", "faust@w1", 12, "ready", True),
            Worker("http://w2:6067", None, None, "down", None, "ClientConnectorError"),
        ],
        dlq_records=3,
        dlq_pending={"schema_violation": 2},
        ingress=[
            Ingress("http://i:8080", "ready", {"records": 2, "bytes": 3072, "limit_bytes": 1 << 30, "oldest_age_s": 75.0}),
            Ingress("http://j:8080", "down", None, "ClientConnectorError"),
        ],
        newest_applied="2026-01-05T16:59:58.120Z",
        freshness_s=1.9,
        unroutable=4,
        schema="0001",
        schema_head="0002",
    )  # fmt: skip
    assert status.ok and status.lag_by_topic() == {"webhooks.retell": 50, "webhooks.calcom": 0}
    assert lines(status) == [
        "switchboard status at 2026-01-05T17:00:00+00:00 (consumer group switchboard)",
        "kafka      ok, group Stable",
        "lag        webhooks.calcom 0, webhooks.retell 50",
        "             webhooks.retell[1]  end 900  committed 850  lag 50",
        "workers",
        "  http://w1:6066 member faust@w1, 12 partition(s), ready, tables recovered",
        "  http://w2:6067 not in the group, down (ClientConnectorError)",
        "dlq        3 record(s); pending events by reason: schema_violation 2",
        "ingress    http://i:8080 ready; spool 2 record(s), 3.0 KiB of 1.0 GiB, oldest 75s",
        "ingress    http://j:8080 unknown (does not answer) (ClientConnectorError); spool unknown",
        "freshness  newest applied event 2026-01-05T16:59:58.120Z (2s ago)",
        "unroutable 4 event(s)",
        "schema     revision 0001 (code expects 0002: run switchboard migrate)",
    ]
    assert len(lines(status, all_partitions=True)) == len(lines(status)) + 2
    status.backfill = [
        {"provider": "calcom", "covered_until": "2026-01-05T16:58:00.000Z",
         "last_success_at": "2026-01-05T16:58:02.000Z", "last_written": 3, "last_error": None},
        {"provider": "retell", "covered_until": None, "last_success_at": None,
         "last_written": 0, "last_error": "the API key was refused"},
    ]  # fmt: skip
    assert lines(status)[-2:] == [
        "backfill   calcom: covered until 2026-01-05T16:58:00.000Z, last success "
        "2026-01-05T16:58:02.000Z, 3 written last run",
        "backfill   retell: covered until -, last success never, 0 written last run, "
        "last error: the API key was refused",
    ]
    down = Status(at="t", group="g", kafka="Kafka unreachable at x:1", database="MySQL unreachable")
    assert not down.ok
    assert "kafka      Kafka unreachable at x:1" in lines(down)
    assert "mysql      MySQL unreachable" in lines(down)
