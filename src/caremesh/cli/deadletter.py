"""`caremesh deadletter list|show`: operators' view of deadletter.v1, payloads only when audited.

`list` prints coordinates, times and reason codes, never a key or a value. `show` reads one
dead letter by `TOPIC:PARTITION:OFFSET`; a sealed one (`caremesh.tables.deadletters.SCHEME`)
is opened
with the patient's data key found through the vault (`keys.patient.v1` folded with the master
key). Before any payload is printed, a FHIR AuditEvent (DICOM 110110 Patient Record, action R,
subtype `deadletter-view`, agent = the operator) is acknowledged on `audit.v1`. When the data key
is gone (the patient was erased) `show` says so and prints nothing else.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

import orjson

from caremesh import envelope, topics
from caremesh.audit.events import view_audit_event
from caremesh.connectors.reidentify import VaultReader
from caremesh.envelope import KeyId, PatientKey
from caremesh.errors import (
    ConfigurationError,
    DeadLetterError,
    KafkaUnavailableError,
)
from caremesh.kafka import config as kafka_config
from caremesh.kafka.client import (
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from caremesh.kafka.io import Output, produce_and_wait
from caremesh.kafka.reading import read_to_end_offsets
from caremesh.kafka.retry import retrying_leadership, watermark_offsets
from caremesh.pseudonym.keys import master_key_bytes, vault_keys
from caremesh.pseudonym.vault import VaultIndex
from caremesh.settings import KafkaSettings, Settings
from caremesh.tables import deadletters
from caremesh.topics import DEADLETTER_CLI_GROUP

CE_SOURCE: Final = "urn:caremesh:cli:deadletter"
EXIT_ERASED: Final = 3
_SINCE = re.compile(r"(\d+)([smhd])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a record sits."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def parse_coordinates(text: str, kafka: KafkaSettings) -> Coordinates:
    """`TOPIC:PARTITION:OFFSET`; TOPIC is a dead-letter topic (the prefix may be left out)."""
    topic, _, rest = text.rpartition(":")
    topic, _, part = topic.rpartition(":")
    if not topic or not part.isdigit() or not rest.isdigit():
        raise DeadLetterError("coordinates must be TOPIC:PARTITION:OFFSET, e.g. deadletter.v1:0:42")
    if not topic.endswith(topics.DEADLETTER):
        raise DeadLetterError(f"{topic} is not a dead-letter topic ({topics.DEADLETTER})")
    if topic == topics.DEADLETTER:
        topic = kafka.topic_prefix + topic
    return Coordinates(topic, int(part), int(rest))


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `12h`, `7d` (ago) or an ISO 8601 date or date-time (UTC when no zone is given)."""
    relative = _SINCE.fullmatch(text.strip())
    if relative:
        return now - timedelta(seconds=int(relative[1]) * _UNITS[relative[2]])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DeadLetterError("--since: use 30m, 12h, 7d or an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _consumer(kafka: KafkaSettings) -> Consumer:
    return Consumer(
        kafka_config.consumer_config(
            kafka,
            DEADLETTER_CLI_GROUP,
            **{"enable.auto.commit": False, "enable.partition.eof": True},
        )
    )


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise DeadLetterError(f"topic {topic} does not exist or has no partitions")
    return sorted(meta.partitions)


def _header(msg: Message, name: str) -> str:
    raw = msg.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else raw
    return envelope.header_value(pairs, name) or ""


def list_dead_letters(
    kafka: KafkaSettings,
    out: TextIO,
    *,
    stage: str | None = None,
    code: str | None = None,
    since: datetime | None = None,
    timeout: float = 120.0,
) -> int:
    """Print one line per dead letter (coordinates, time, stage, code, origin, encryption)."""
    topic = kafka.topic_prefix + topics.DEADLETTER
    consumer = _consumer(kafka)
    count = 0
    try:
        parts = _partitions(consumer, topic)
        starts = [TopicPartition(topic, p, 0) for p in parts]
        if since is not None:
            at = int(since.timestamp() * 1000)
            found = retrying_leadership(
                lambda: consumer.offsets_for_times(
                    [TopicPartition(topic, p, at) for p in parts], timeout=10
                ),
                10,
            )
            starts = [tp for tp in found if tp.offset >= 0]
        for msg in read_to_end_offsets(consumer, starts, timeout, "dead-letter topic"):
            if stage and _header(msg, envelope.H_ERROR_STAGE) != stage:
                continue
            if code and _header(msg, envelope.H_ERROR_CODE) != code:
                continue
            _, ts = msg.timestamp()
            when = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="seconds")
            origin = ":".join(
                _header(msg, h)
                for h in (
                    envelope.H_ORIGIN_TOPIC,
                    envelope.H_ORIGIN_PARTITION,
                    envelope.H_ORIGIN_OFFSET,
                )
            )
            encryption = _header(msg, deadletters.H_ENCRYPTION) or deadletters.PLAINTEXT
            print(
                f"{topic}:{msg.partition()}:{msg.offset()}  {when}  "
                f"stage={_header(msg, envelope.H_ERROR_STAGE)}  "
                f"code={_header(msg, envelope.H_ERROR_CODE)}  origin={origin}  "
                f"encryption={encryption}",
                file=out,
            )
            count += 1
    except KafkaException:
        raise KafkaUnavailableError(f"topic {topic} not readable") from None
    finally:
        consumer.close()
    print(f"{count} dead letter(s)", file=out)
    return count


def _fetch(kafka: KafkaSettings, where: Coordinates, timeout: float) -> Message:
    consumer = _consumer(kafka)
    try:
        if where.partition not in _partitions(consumer, where.topic):
            raise DeadLetterError(f"{where}: no such partition")
        tp = TopicPartition(where.topic, where.partition, where.offset)
        low, high = watermark_offsets(consumer, tp)
        if not low <= where.offset < high:
            raise DeadLetterError(f"{where}: no such offset (retained offsets {low}..{high - 1})")
        for msg in read_to_end_offsets(consumer, [tp], timeout, "dead-letter topic"):
            if msg.offset() == where.offset:
                return msg
            break
        raise DeadLetterError(f"{where}: no record at this offset (compacted or not readable)")
    except KafkaException:
        raise KafkaUnavailableError(f"topic {where.topic} not readable") from None
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class Shown:
    """An opened dead letter: status, and the payload only when the status allows it."""

    status: str
    """decrypted | plaintext | erased | dropped | not-opened"""
    patient: PatientKey | None = None
    key: bytes | None = None
    value: bytes | None = None


def open_message(settings: Settings, msg: Message, timeout: float = 60.0) -> Shown:
    """Open one dead letter with the vault's data keys (no audit, no output: see `show`)."""
    scheme = _header(msg, deadletters.H_ENCRYPTION) or deadletters.PLAINTEXT
    if scheme == deadletters.PLAINTEXT:
        return Shown("plaintext", key=msg.key(), value=msg.value())
    if scheme in (deadletters.DROPPED_ERASED, deadletters.DROPPED_NO_KEY):
        return Shown("dropped")
    if scheme != deadletters.SCHEME:
        raise DeadLetterError(f"unknown dead-letter encryption scheme {scheme}")
    secret = settings.pseudonym.master_key
    master = master_key_bytes(None if secret is None else secret.get_secret_value())
    key_id = KeyId(settings.pseudonym.key_id)
    keys = {key_id: vault_keys(master, key_id)}
    reader = VaultReader(settings, VaultIndex(keys), timeout=timeout)
    reader.catch_up()
    found = deadletters.find_patient(reader.index, keys, _header(msg, deadletters.H_DATA_KEY_ID))
    if found is None:
        return Shown("erased")
    patient, data_key = found
    origin = deadletters.Origin(
        _header(msg, envelope.H_ORIGIN_TOPIC),
        int(_header(msg, envelope.H_ORIGIN_PARTITION) or -1),
        int(_header(msg, envelope.H_ORIGIN_OFFSET) or -1),
    )
    value = deadletters.open_dead_letter(data_key, patient, msg.value() or b"", origin)
    if value is None:
        return Shown("not-opened", patient=patient)
    return Shown("decrypted", patient=patient, key=patient.encode(), value=value)


def _write_audit(kafka: KafkaSettings, audit: dict[str, Any]) -> None:
    """Write the AuditEvent and wait for the broker's acknowledgement (else raise)."""
    topic = kafka.topic_prefix + topics.AUDIT
    env = envelope.Envelope(audit["id"], CE_SOURCE, envelope.fhir_event_type("AuditEvent"))
    producer = Producer(kafka_config.producer_config(kafka, **{"message.timeout.ms": 15000}))
    record = Output(topic, audit["id"].encode(), orjson.dumps(audit), env.headers())
    try:
        produce_and_wait(producer, [record], "the audit event")
    except KafkaUnavailableError:
        raise KafkaUnavailableError("the audit event was not acknowledged; nothing shown") from None


def show_dead_letter(
    settings: Settings,
    where: Coordinates,
    out: TextIO,
    *,
    operator: str,
    reason: str,
    timeout: float = 60.0,
) -> int:
    """Print one dead letter's reason headers and payload (after auditing); exit status."""
    msg = _fetch(settings.kafka, where, timeout)
    shown = open_message(settings, msg, timeout)
    if shown.status == "erased":
        print(
            f"{where}: not decryptable: the patient was erased (the data key was "
            "crypto-shredded on keys.patient.v1)",
            file=out,
        )
        return EXIT_ERASED
    if shown.status == "not-opened":
        raise DeadLetterError(f"{where}: the sealed value does not open (tampered or moved)")
    headers = [
        (envelope.H_ERROR_STAGE, _header(msg, envelope.H_ERROR_STAGE)),
        (envelope.H_ERROR_CODE, _header(msg, envelope.H_ERROR_CODE)),
        (envelope.H_ERROR_REASON, _header(msg, envelope.H_ERROR_REASON)),
        ("origin", ":".join(_header(msg, h) for h in _ORIGIN)),
        ("encryption", _header(msg, deadletters.H_ENCRYPTION) or deadletters.PLAINTEXT),
    ]
    if shown.status == "dropped":
        for name, value in headers:
            print(f"{name}: {value}", file=out)
        print("payload: none (dropped when the dead letter was written)", file=out)
        return 0
    audit_id = str(uuid.uuid4())
    _write_audit(
        settings.kafka, view_audit_event(str(where), operator, reason, shown.patient, audit_id)
    )
    for name, value in headers:
        print(f"{name}: {value}", file=out)
    print(f"audit-event: {audit_id}", file=out)
    print(f"key: {_text(shown.key)}", file=out)
    print(f"value: {_text(shown.value)}", file=out)
    return 0


_ORIGIN: Final = (envelope.H_ORIGIN_TOPIC, envelope.H_ORIGIN_PARTITION, envelope.H_ORIGIN_OFFSET)


def _text(data: bytes | None) -> str:
    if data is None:
        return "(none)"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")


def add_parser(sub: Any) -> None:
    """The `caremesh deadletter` subcommand."""
    dl = sub.add_parser(
        "deadletter",
        help="list dead letters (codes only) or show one (decrypted, audited)",
        description="Operators' view of deadletter.v1. `list` never prints a key or a payload. "
        "`show` decrypts one dead letter with the patient's data key found through the vault "
        "(needs CAREMESH_PSEUDONYM__MASTER_KEY) and writes an AuditEvent to audit.v1 before "
        "printing anything; after the patient's erasure it only says so (exit status 3).",
    )
    actions = dl.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser(
        "list",
        help="coordinates, times, stage and reason codes of dead letters",
        description="One line per dead letter: TOPIC:PARTITION:OFFSET, time, stage, error code, "
        "origin coordinates and encryption scheme. Never a key or a payload.",
        epilog="example: caremesh deadletter list --stage pathways --since 24h",
    )
    lst.add_argument("--stage", help="only this stage (validate, hl7v2, share, ...)")
    lst.add_argument("--code", help="only this error code (e.g. stage-error, invalid-fhir)")
    lst.add_argument(
        "--since", metavar="WHEN", help="only newer ones: 30m, 12h, 7d or an ISO 8601 date-time"
    )
    show = actions.add_parser(
        "show",
        help="decrypt and print one dead letter (audited)",
        description="Print one dead letter's reason headers, key and payload. The read is "
        "recorded as an AuditEvent on audit.v1 first; if that write is not acknowledged nothing "
        "is printed. A dead letter whose patient was erased cannot be decrypted by anyone.",
        epilog="example: caremesh deadletter show deadletter.v1:2:17 --reason 'ticket OPS-42'",
    )
    show.add_argument("coordinates", metavar="TOPIC:PARTITION:OFFSET", help="as `list` prints")
    show.add_argument("--reason", required=True, help="why you view it (goes to the audit)")
    show.add_argument("--operator", default=None, help="your name (default: the OS user name)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `caremesh deadletter ...`."""
    if args.action == "list":
        since = parse_since(args.since, datetime.now(UTC)) if args.since else None
        list_dead_letters(settings.kafka, sys.stdout, stage=args.stage, code=args.code, since=since)
        return 0
    if not args.reason.strip():
        raise ConfigurationError("--reason must not be empty")
    return show_dead_letter(
        settings,
        parse_coordinates(args.coordinates, settings.kafka),
        sys.stdout,
        operator=args.operator or getpass.getuser(),
        reason=args.reason.strip(),
    )
