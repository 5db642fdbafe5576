"""`caremesh import PATH`: NDJSON and FHIR JSON files into ingest.fhir.v1, with a progress bar.

Inputs: `.ndjson`/`.jsonl` files (FHIR Bulk Data format: one resource per line, blank lines
ignored), `.json` files (one resource or Bundle each), and directories (searched recursively for
those suffixes, in sorted order). NDJSON files are streamed line by line, never loaded whole; a
`.json` file is one message, so it is read whole up to `MAX_MESSAGE_BYTES`.

Every line or file goes through the same checks as the HTTP API (`fhir_checks.check_fhir`, any
Bundle type the validate stage accepts). Valid ones are written as received; the message id is
Bundle.identifier when there is one, else the hash of the exact bytes, so re-importing a file
(even renamed) yields the same `ce_id`s and downstream drops the duplicates. Rejected ones are
counted by code with their coordinates (file, line), never their content.

Throughput: records are sent in chunks of `chunk_size`; one chunk is in flight while the next is
validated, and every chunk is acknowledged before the summary is returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from caremesh import topics
from caremesh.connectors import source_urn
from caremesh.connectors.fhir_checks import Checked, check_fhir, stable_message_id
from caremesh.envelope import FHIR_JSON, H_FHIR_RELEASE, Envelope, fhir_event_type
from caremesh.errors import ConfigurationError, InvalidFhirError
from caremesh.fhir.ingest import Rejection
from caremesh.fhir.validate import normalise_release
from caremesh.kafka.io import AsyncProducer, Output
from caremesh.settings import KafkaSettings, Settings, SourceSettings

log = logging.getLogger(__name__)

NDJSON_SUFFIXES: Final = frozenset({".ndjson", ".jsonl"})
JSON_SUFFIXES: Final = frozenset({".json"})
MAX_MESSAGE_BYTES: Final = 15 * 1024 * 1024
"""Larger lines or files are rejected (`too-large`): the topic takes records up to 16 MiB."""
MAX_REJECTIONS_KEPT: Final = 1000


@dataclass(frozen=True, slots=True)
class ImportRejection:
    """Where a rejected message was: the file, its line (None for a .json file), the code."""

    path: str
    line: int | None
    code: str


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import did: `sent` records acknowledged, `rejected` messages, `files` read."""

    sent: int
    rejected: int
    files: int
    by_code: Mapping[str, int] = field(default_factory=dict)
    """Rejections per error code (complete)."""
    rejections: tuple[ImportRejection, ...] = ()
    """The first MAX_REJECTIONS_KEPT rejections with their coordinates."""


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to import: given files, and matching files found under given directories."""
    out: list[Path] = []
    wanted = NDJSON_SUFFIXES | JSON_SUFFIXES
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in wanted
            )
        elif path.is_file():
            out.append(path)
        else:
            raise ConfigurationError(f"import: no such file or directory: {path}")
    return out


def import_paths(
    paths: Sequence[str | Path],
    settings: Settings,
    source: str,
    progress: bool = True,
    *,
    chunk_size: int = 500,
) -> ImportSummary:
    """Import files into `<prefix>ingest.fhir.v1` as source `source`; blocks until all acked.

    Raises ConfigurationError for a missing path or an invalid source id, and
    KafkaUnavailableError when the broker does not acknowledge a chunk.
    """
    try:
        SourceSettings(id=source)
    except ValueError:
        raise ConfigurationError("import: the source id must be letters, digits, '-_.'") from None
    files = find_files(paths)
    configured = {s.id: s.fhir_release for s in settings.sources}
    try:
        hint = normalise_release(configured.get(source))
    except InvalidFhirError as exc:
        raise ConfigurationError(f"source {source}: fhir_release is not supported") from exc
    return asyncio.run(
        _import(files, settings.kafka, source, hint=hint, progress=progress, chunk_size=chunk_size)
    )


async def _import(
    files: list[Path],
    kafka: KafkaSettings,
    source: str,
    *,
    hint: str | None,
    progress: bool,
    chunk_size: int,
) -> ImportSummary:
    producer = AsyncProducer.from_settings(kafka)
    sender = _ChunkSender(producer, chunk_size)
    topic = kafka.topic_prefix + topics.INGEST_FHIR
    by_code: Counter[str] = Counter()
    kept: list[ImportRejection] = []
    bar = _progress(progress)
    try:
        with bar:
            task = bar.add_task("import", total=sum(f.stat().st_size for f in files))
            for number, path in enumerate(files, 1):
                sent_before, rejected_before = sender.queued, sum(by_code.values())
                for line, body, size in _messages(path):
                    bar.advance(task, size)
                    checked = (
                        check_fhir(body, source=source, release_hint=hint)
                        if body is not None and len(body) <= MAX_MESSAGE_BYTES
                        else Rejection("too-large", "message exceeds the import limit")
                    )
                    if isinstance(checked, Rejection):
                        by_code[checked.code] += 1
                        if len(kept) < MAX_REJECTIONS_KEPT:
                            kept.append(ImportRejection(str(path), line, checked.code))
                        continue
                    await sender.add(_record(topic, source, body or b"", checked, hint))
                log.info(
                    "import file %d/%d: sent=%d rejected=%d",
                    number,
                    len(files),
                    sender.queued - sent_before,
                    sum(by_code.values()) - rejected_before,
                )
            await sender.finish()
    finally:
        await asyncio.to_thread(producer.close, 10.0)
    summary = ImportSummary(
        sent=sender.acked,
        rejected=sum(by_code.values()),
        files=len(files),
        by_code=dict(by_code),
        rejections=tuple(kept),
    )
    log.info(
        "import done: files=%d sent=%d rejected=%d", summary.files, summary.sent, summary.rejected
    )
    return summary


def _messages(path: Path) -> Iterator[tuple[int | None, bytes | None, int]]:
    """(line number or None, message bytes or None when too large, bytes consumed) of a file."""
    if path.suffix.lower() in NDJSON_SUFFIXES:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                body = raw.rstrip(b"\r\n")
                if body.strip():
                    yield number, body, len(raw)
                # a blank line is skipped; the bar catches up with the next message
        return
    size = path.stat().st_size
    if size > MAX_MESSAGE_BYTES:
        yield None, None, size  # rejected as too-large without reading it
        return
    yield None, path.read_bytes(), size


def _record(topic: str, source: str, body: bytes, checked: Checked, hint: str | None) -> Output:
    mid = stable_message_id(source, body, checked)
    extra = {H_FHIR_RELEASE: hint} if hint else {}
    env = Envelope(
        mid,
        source_urn(source),
        fhir_event_type(checked.resource_type),
        content_type=FHIR_JSON,
        extra=extra,
    )
    return Output(topic, mid.encode(), body, env.headers())


class _ChunkSender:
    """Sends records in chunks, keeping one chunk in flight while the caller prepares the next."""

    def __init__(self, producer: AsyncProducer, chunk_size: int) -> None:
        self._producer = producer
        self._size = max(1, chunk_size)
        self._chunk: list[Output] = []
        self._in_flight: asyncio.Task[int] | None = None
        self.queued = 0
        self.acked = 0

    async def add(self, record: Output) -> None:
        self._chunk.append(record)
        self.queued += 1
        if len(self._chunk) >= self._size:
            await self._flush()

    async def _flush(self) -> None:
        if self._in_flight is not None:
            self.acked += await self._in_flight
            self._in_flight = None
        if self._chunk:
            chunk, self._chunk = self._chunk, []
            self._in_flight = asyncio.create_task(self._send(chunk))
            await asyncio.sleep(0)  # let the task hand its records to librdkafka now

    async def _send(self, chunk: list[Output]) -> int:
        return len(await self._producer.send_all(chunk))

    async def finish(self) -> None:
        await self._flush()
        if self._in_flight is not None:
            self.acked += await self._in_flight
            self._in_flight = None


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]import"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
