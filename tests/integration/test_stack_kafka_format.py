"""``scripts/stack.sh`` formats a broker's storage whatever its cluster id looks like.

A cluster id is 16 random bytes in URL-safe base64, so one id in 64 begins with ``-``. Passed
as ``-t ID``, such an id reads as an option to ``kafka-storage format``, which stops with
"argument --cluster-id/-t: expected one argument". A CI run lost a fault test that way: each
run formats a handful of brokers, so it came up about once in ten runs.
"""

from __future__ import annotations

from pathlib import Path

from testbed.kafka_instance import PrivateKafka

DASHED_ID = "-dashedClusterIdAAAAAA"  # 22 characters, like the ids stack.sh writes


def test_a_cluster_id_that_begins_with_a_dash_formats(tmp_path: Path) -> None:
    directory = tmp_path / "kafka"
    directory.mkdir()
    (directory / "cluster.id").write_text(DASHED_ID)
    kafka = PrivateKafka("dashed-id", directory)
    try:
        kafka.start()
        meta = (directory / "node1" / "data" / "meta.properties").read_text()
    finally:
        kafka.run("kill")
    assert f"cluster.id={DASHED_ID}" in meta.splitlines()
