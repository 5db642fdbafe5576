"""`caremesh research follow`: keep a DuckDB file of SQL on FHIR view tables up to date.

Reads `research.<study>.v1` only (no consumer group: the offsets live in the DuckDB file,
`caremesh.research.follow`), from the offsets the file holds, or from the first retained offset
of a partition it has not read yet. Each batch of records and the offsets after it are
committed in one DuckDB transaction, so a killed follower resumes without duplicates. Runs until
interrupted, or with `until_end` until it reached the end offsets read at start.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from caremesh.cli.research_export import _check_study, _key_id, _ranges
from caremesh.errors import KafkaUnavailableError, RejectedInputError
from caremesh.kafka.client import Consumer, TopicPartition
from caremesh.kafka.config import confluent_config
from caremesh.research.follow import FollowStore
from caremesh.research.records import Retraction, StudyResource, read_record
from caremesh.research.sql_on_fhir import ViewDefinition
from caremesh.settings import KafkaSettings
from caremesh.topics import research_topic

log = logging.getLogger(__name__)

BATCH: Final = 1000
IDLE_TIMEOUT: Final = 60.0
"""With `until_end`: seconds without a record before giving up (the broker stopped answering)."""


@dataclass
class FollowSummary:
    """What one run of a follower applied (counts only)."""

    read: int = 0
    added: int = 0
    deleted: int = 0
    retractions: int = 0
    invalid: int = 0


def follow_study(
    kafka: KafkaSettings,
    study: str,
    views: Sequence[ViewDefinition],
    output: Path,
    *,
    until_end: bool = False,
) -> FollowSummary:
    """Follow `research.<study>.v1` into the DuckDB file `output` (see the module docstring).

    Raises ConfigurationError for an invalid study id, a topic that does not exist, or a file
    that follows another study or other views; KafkaUnavailableError when the broker does not
    answer.
    """
    _check_study(study)
    topic = kafka.topic_prefix + research_topic(study)
    consumer = Consumer(
        {
            **confluent_config(kafka),
            "group.id": f"caremesh-follow-{uuid.uuid4().hex}",  # never joined: assign only
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        }
    )
    stop = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    try:
        ranges = _ranges(consumer, topic, study)  # an unknown study creates no file
        store = FollowStore(output, study, views)
    except BaseException:
        consumer.close()
        raise
    previous = signal.signal(signal.SIGTERM, _stop)
    summary = FollowSummary()
    try:
        done = store.offsets()
        start = {r.partition: max(done.get(r.partition, r.start), r.start) for r in ranges}
        ends = {r.partition: r.end for r in ranges}
        consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        log.info("research follow: study=%s partitions=%d", study, len(start))
        last = time.monotonic()
        while not stop:
            if until_end and all(start[p] >= ends[p] for p in start):
                break
            try:
                batch = consumer.consume(num_messages=BATCH, timeout=1.0)
            except KeyboardInterrupt:
                break
            records: list[StudyResource | Retraction] = []
            for msg in batch:
                if msg.error() is not None:
                    continue
                summary.read += 1
                partition, offset = msg.partition() or 0, msg.offset() or 0
                start[partition] = offset + 1
                try:
                    record = read_record(msg.key(), msg.value(), partition, offset, _key_id(msg))
                except RejectedInputError as exc:
                    summary.invalid += 1
                    log.warning("research follow skipped a record: %s", exc.detail)
                    continue
                summary.retractions += isinstance(record, Retraction)
                records.append(record)
            # Positions also pass transaction markers, which are never delivered as records.
            for tp in consumer.position([TopicPartition(topic, p) for p in start]):
                if tp.offset >= 0:
                    start[tp.partition] = max(start[tp.partition], tp.offset)
            if batch:
                last = time.monotonic()
                added, deleted = store.apply(records, dict(start))
                summary.added += added
                summary.deleted += deleted
            elif until_end and time.monotonic() - last > IDLE_TIMEOUT:
                raise KafkaUnavailableError(f"no records from {topic} for {IDLE_TIMEOUT:.0f}s")
        store.apply([], dict(start))  # positions past transaction markers
    finally:
        signal.signal(signal.SIGTERM, previous)
        consumer.close()
        store.close()
    log.info(
        "research follow stopped: read=%d added=%d deleted=%d invalid=%d",
        summary.read,
        summary.added,
        summary.deleted,
        summary.invalid,
    )
    return summary
