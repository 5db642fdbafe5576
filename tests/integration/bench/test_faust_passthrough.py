"""The Faust app (`bench.faust_app`: idempotent producers, the commit-safe consumer with
its eager record deliveries, the lean monitor) carries every record through each agent the
benchmark measures (`bench.faust_passthrough`), on the real broker, and commits their offsets:
the framework-overhead row measures a worker that loses nothing. So does the batch runner's
passthrough (`bench.batch_passthrough`), the baseline of the Faust and quixstreams rows."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.raw import FAUST_VARIANTS, start_faust_passthrough, start_passthrough
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from caremesh.kafka import config as kafka_config

RECORDS = 3000
PARTITIONS = 3


@pytest.fixture
def topics(kafka: str) -> Iterator[tuple[str, str]]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    source, target = prefix + "faust-in", prefix + "faust-out"
    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.create_topics(
        [NewTopic(name, PARTITIONS, 1) for name in (source, target)]
    ).values():
        future.result(30)
    try:
        yield source, target
    finally:
        for future in admin.delete_topics([source, target]).values():
            future.result(30)


def _read(
    kafka: str, topic: str, count: int, timeout: float
) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = Consumer(kafka_config.consumer_config(kafka, f"reader-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append((msg.value(), dict(msg.headers() or [])))
    finally:
        consumer.close()
    return out


def _committed_and_ends(kafka: str, group: str, topic: str) -> tuple[list[int], list[int]]:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = [tp.offset for tp in consumer.committed(tps, timeout=10)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        return committed, ends
    finally:
        consumer.close()


@pytest.mark.parametrize("name", [*FAUST_VARIANTS, "batch runner"])
def test_every_record_is_forwarded_and_its_offset_committed(
    kafka: str, topics: tuple[str, str], tmp_path: Path, name: str
) -> None:
    source, target = topics
    producer = Producer(kafka_config.producer_config(kafka))
    for i in range(RECORDS):
        producer.produce(
            source,
            key=f"patient-{i % 97}".encode(),
            value=f"record-{i}".encode(),
            headers=[("ce_id", f"id-{i}".encode())],
        )
        producer.poll(0)
    assert producer.flush(60) == 0

    group = f"t{uuid.uuid4().hex[:10]}-passthrough"
    log = tmp_path / "passthrough.log"
    with log.open("wb") as out:
        if name in FAUST_VARIANTS:
            variant, _ = FAUST_VARIANTS[name]
            proc = start_faust_passthrough(kafka, source, target, group, variant, out)
        else:
            proc = start_passthrough(
                sys.executable, "bench.batch_passthrough", kafka, source, target, group, out
            )
    try:
        forwarded = _read(kafka, target, RECORDS, timeout=120)
        values = {value for value, _ in forwarded}
        assert values == {f"record-{i}".encode() for i in range(RECORDS)}, log.read_text()[-3000:]
        assert all(headers["ce_id"] == b"id-" + value[7:] for value, headers in forwarded)

        # each partition's offset is committed up to its end: nothing would be read again
        deadline = time.monotonic() + 30
        committed, ends = _committed_and_ends(kafka, group, source)
        while committed != ends and time.monotonic() < deadline:
            time.sleep(1)
            committed, ends = _committed_and_ends(kafka, group, source)
        assert sum(ends) == RECORDS
        assert committed == ends, log.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(60)
