"""`caremesh research export`: a study topic, from its beginning to its current end, to a file.

A researcher's tool (DESIGN §8): it reads `research.<study>.v1` and nothing else (no other topic,
no key material), with a consumer outside any group that is assigned every partition from its
first retained offset up to the end offsets read when the export starts, so it always finishes.
Records are spooled to a temporary file while retractions are collected, then the kept ones
are written as NDJSON or Parquet, or flattened by SQL on FHIR views into tables
(`caremesh.research.export`). A progress bar on stderr counts the records read against the
total of the end offsets.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from caremesh.envelope import H_KEY_ID, header_value
from caremesh.errors import ConfigurationError, KafkaUnavailableError, RejectedInputError
from caremesh.kafka.client import Consumer, KafkaException, Message, TopicPartition
from caremesh.kafka.config import confluent_config
from caremesh.kafka.retry import watermark_offsets
from caremesh.research.export import ExportFormat, ExportSummary, RetractionIndex, open_writer
from caremesh.research.records import StudyResource, read_record
from caremesh.research.sql_on_fhir import ViewDefinition
from caremesh.research.tables import ViewTableWriter
from caremesh.settings import KafkaSettings, StudySettings
from caremesh.topics import research_topic

log = logging.getLogger(__name__)

STALL_TIMEOUT: Final = 60.0
"""Seconds without progress before the export gives up (the broker stopped answering)."""


@dataclass(frozen=True, slots=True)
class _Range:
    partition: int
    start: int
    end: int


def _check_study(study: str) -> None:
    try:
        StudySettings(id=study)
    except ValueError:
        raise ConfigurationError("study id must be letters, digits, '-' or '_'") from None


def _ranges(consumer: Consumer, topic: str, study: str) -> list[_Range]:
    try:
        meta = consumer.list_topics(topic, timeout=15)
    except KafkaException as exc:
        raise KafkaUnavailableError("no metadata from the broker") from exc
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ConfigurationError(f"study {study}: topic {topic} does not exist")
    out = []
    for partition in sorted(found.partitions):
        try:
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition), 15)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"no offsets for {topic} [{partition}]") from exc
        out.append(_Range(partition, int(low), int(high)))
    return out


def _read(consumer: Consumer, topic: str, ranges: list[_Range]) -> Iterator[Message]:
    """Every record of `ranges`, partition order kept, until each partition reached its end."""
    pending = {r.partition: r for r in ranges if r.end > r.start}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, r.partition, r.start) for r in pending.values()])
    last_progress = time.monotonic()
    while pending:
        batch = consumer.consume(num_messages=1000, timeout=1.0)
        for msg in batch:
            if msg.error() is not None:
                continue
            last_progress = time.monotonic()
            partition = msg.partition() or 0
            goal = pending.get(partition)
            if goal is None or (msg.offset() or 0) >= goal.end:
                continue
            yield msg
        # Positions also pass transaction markers, which are never delivered as records.
        for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
            if tp.offset >= pending[tp.partition].end:
                del pending[tp.partition]
        if time.monotonic() - last_progress > STALL_TIMEOUT:
            raise KafkaUnavailableError(f"no records from {topic} for {STALL_TIMEOUT:.0f}s")


def _key_id(msg: Message) -> str | None:
    headers = msg.headers()
    if isinstance(headers, dict):
        return header_value(list(headers.items()), H_KEY_ID)
    return header_value(headers, H_KEY_ID)


def _spool(
    messages: Iterator[Message], spool: IO[bytes], index: RetractionIndex, progress: Progress
) -> ExportSummary:
    summary = ExportSummary()
    task = progress.tasks[0].id
    for msg in messages:
        summary.read += 1
        progress.advance(task)
        try:
            record = read_record(
                msg.key(),
                msg.value(),
                msg.partition() or 0,
                msg.offset() or 0,
                _key_id(msg),
            )
        except RejectedInputError as exc:
            summary.invalid += 1
            log.warning("research export skipped a record: %s", exc.detail)
            continue
        if isinstance(record, StudyResource):
            line = [record.pseudonym, record.partition, record.offset, record.key_id]
            spool.write(orjson.dumps([*line, record.resource], option=orjson.OPT_APPEND_NEWLINE))
        else:
            index.add(record)
    summary.retractions = index.count
    return summary


def _kept(
    spool: IO[bytes], index: RetractionIndex, summary: ExportSummary
) -> Iterator[StudyResource]:
    spool.seek(0)
    for line in spool:
        pseudonym, partition, offset, key_id, resource = orjson.loads(line)
        if index.retracted(pseudonym, partition, offset):
            summary.retracted += 1
            continue
        yield StudyResource(pseudonym, partition, offset, key_id, resource)


def _progress_bar(enabled: bool, study: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]export {study}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def export_study(
    kafka: KafkaSettings,
    study: str,
    fmt: ExportFormat,
    output: Path,
    *,
    views: Sequence[ViewDefinition] = (),
    progress: bool = True,
) -> ExportSummary:
    """Export `research.<study>.v1` (from its first retained offset to its current end) to `output`.

    With `views` (SQL on FHIR ViewDefinitions), each view's rows go to its own table instead of
    the resources (`open_writer`); a retracted pseudonym's resources give no row.

    Raises ConfigurationError for an invalid study id, a topic that does not exist or an output
    that cannot be written (before anything is read), KafkaUnavailableError when the broker does
    not answer.
    """
    _check_study(study)
    topic = kafka.topic_prefix + research_topic(study)
    writer = open_writer(fmt, output, views)  # fails early on an unwritable path
    consumer = Consumer(
        {
            **confluent_config(kafka),
            "group.id": f"caremesh-export-{uuid.uuid4().hex}",  # never joined: assign only
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        ranges = _ranges(consumer, topic, study)
        index = RetractionIndex()
        pseudonyms: set[str] = set()
        with tempfile.TemporaryFile(prefix="caremesh-export-") as spool:
            with _progress_bar(progress, study) as bar:
                bar.add_task("read", total=sum(r.end - r.start for r in ranges))
                summary = _spool(_read(consumer, topic, ranges), spool, index, bar)
            for record in _kept(spool, index, summary):
                writer.write(record)
                summary.records += 1
                pseudonyms.add(record.pseudonym)
        summary.pseudonyms = len(pseudonyms)
        writer.commit()
        if isinstance(writer, ViewTableWriter):
            summary.tables = writer.counts
    except BaseException:
        writer.abort()
        raise
    finally:
        consumer.close()
    log.info(
        "research export done: format=%s read=%d written=%d retracted=%d invalid=%d",
        fmt.value,
        summary.read,
        summary.records,
        summary.retracted,
        summary.invalid,
    )
    return summary
