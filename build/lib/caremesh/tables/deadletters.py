"""Crypto-shredded dead letters: sealing under the patient's vault data key, and its key store.

DESIGN §5: identifying data kept beyond transport is encrypted with the patient's data key, so
the erasure tombstone on `keys.patient.v1` makes it unreadable everywhere. A dead letter of a
patient-keyed stage (share, pathways, research: they read topics keyed by the patient key) is
written to `deadletter.v1` as follows (`SCHEME`, version 1):

- the data key is the one of the patient's re-identification vault record
  (`caremesh.pseudonym.vault`); when the patient has none yet, a record with an empty
  study → pseudonym mapping is sealed (`vault.seal_record`) and acknowledged first;
- value: nonce (12 bytes) ‖ AES-256-GCM(data key, original value, AAD = "caremesh.deadletter.v1"
  ‖ 0x1f ‖ key id ‖ 0x1f ‖ patient key ‖ 0x1f ‖ origin topic ‖ 0x1f ‖ partition ‖ 0x1f ‖
  offset), so a value moved to other coordinates or to another patient does not open;
- headers: the original record's headers, the value-free reason headers, and
  `caremesh-deadletter-encryption: <SCHEME>` with `caremesh-deadletter-key-id: <key id>`;
- Kafka key: the key id, not the original key. DESIGN §2 keys `deadletter.v1` by the original
  key, but here the original key *is* the patient key (for instance the national health
  identifier), and a key kept in clear for 30 days after an erasure would defeat the shredding.
  The key id is `dk1.` + 32 hex of HMAC-SHA256(data key, "caremesh.deadletter.key-id"): the
  same for all dead letters of one patient (they keep one partition and their order), and
  computable only from the data key. Before erasure an operator with the master key matches it
  against the vault (`find_patient`), so a patient's dead letters can be found and read; after
  erasure nobody, the master key holder included, can link it to anyone.

A dead letter of a patient whose erasure is already on the consent ledger (or whose key record
the store last saw as a tombstone) keeps its reason headers and coordinates but no key and an
empty value (`DROPPED_ERASED`; aiokafka refuses a record with neither): no key record is
created again for an erased patient. A record whose vault record cannot be unwrapped (a master
key version this process does not hold) is written the same way (`DROPPED_NO_KEY`) rather than
in clear; its original stays on the origin topic for that topic's retention. Without a
configured master key, and for the ingest stages that know no patient yet, dead letters stay in
clear (`PLAINTEXT`); see docs/operators/gdpr.md. Nothing here logs or raises with a value, a
key or a patient key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caremesh.envelope import KeyId, PatientKey
from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.client import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from caremesh.kafka.config import consumer_config
from caremesh.kafka.partitioning import partition_for
from caremesh.kafka.retry import watermark_offsets
from caremesh.pseudonym.keys import VaultKeys
from caremesh.pseudonym.vault import VaultIndex, record_data_key, seal_record
from caremesh.randomness import random_bytes
from caremesh.settings import KafkaSettings
from caremesh.topics import DEADLETTER_KEYS_GROUP

log = logging.getLogger(__name__)

SCHEME: Final = "A256GCM.patient-data-key.v1"
"""A dead letter sealed under the patient's vault data key."""
PLAINTEXT: Final = "none"
"""A dead letter kept in clear (no patient known, or no master key configured)."""
DROPPED_ERASED: Final = "dropped.erased"
"""The patient was erased before the dead letter was written: no key, no value."""
DROPPED_NO_KEY: Final = "dropped.no-key"
"""The patient's data key could not be unwrapped with the configured master key."""

H_ENCRYPTION: Final = "caremesh-deadletter-encryption"
H_DATA_KEY_ID: Final = "caremesh-deadletter-key-id"
KEY_ID_PREFIX: Final = "dk1."
_AAD_PREFIX: Final = b"caremesh.deadletter.v1"
_KEY_ID_LABEL: Final = b"caremesh.deadletter.key-id"
_NONCE_BYTES: Final = 12
_FETCH_WAIT_MS: Final = 10
"""How long the broker may hold the store's background fetch. A record written just before a
catch-up is seen only when the fetch in flight returns: measured on the local broker, a
catch-up after a write took 120 ms with the default 500 ms, 6 ms with 10 ms (the research
stage does one per patient it registers)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the dead-lettered record was read."""

    topic: str
    partition: int
    offset: int


def data_key_id(data_key: bytes) -> str:
    """The key id of a patient data key: `dk1.` + 32 hex of HMAC-SHA256(data key, label)."""
    return KEY_ID_PREFIX + hmac.new(data_key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:32]


def _aad(key_id: str, patient: str, origin: Origin) -> bytes:
    parts = (key_id, patient, origin.topic, str(origin.partition), str(origin.offset))
    return b"\x1f".join([_AAD_PREFIX, *(p.encode("utf-8") for p in parts)])


def seal_dead_letter(data_key: bytes, patient: str, value: bytes, origin: Origin) -> bytes:
    """nonce ‖ AES-256-GCM(data key, value, AAD binding key id, patient and origin)."""
    nonce = random_bytes(_NONCE_BYTES)
    aad = _aad(data_key_id(data_key), patient, origin)
    return nonce + AESGCM(data_key).encrypt(nonce, value, aad)


def open_dead_letter(data_key: bytes, patient: str, blob: bytes, origin: Origin) -> bytes | None:
    """The original value, or None when the key, patient or coordinates do not match."""
    if len(blob) < _NONCE_BYTES + 16:
        return None
    aad = _aad(data_key_id(data_key), patient, origin)
    try:
        return AESGCM(data_key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
    except InvalidTag:
        return None


def find_patient(
    index: VaultIndex, keys: Mapping[KeyId, VaultKeys], key_id: str
) -> tuple[PatientKey, bytes] | None:
    """The patient (and data key) whose current vault record has this dead-letter key id.

    None when no record has it: the patient was erased (its record tombstoned), or the record
    was replaced by one with another data key.
    """
    for patient, value in index.records():
        data_key = record_data_key(keys, value)
        if data_key is not None and hmac.compare_digest(data_key_id(data_key), key_id):
            return PatientKey(patient), data_key
    return None


Write = Callable[[bytes, bytes], None]
Erased = Callable[[PatientKey], bool]
"""Writes one `keys.patient.v1` record (key, value) and returns once the broker acknowledged."""


class PatientKeyStore:
    """The wrapped data keys of `keys.patient.v1`, folded by one long-lived consumer.

    The consumer is assigned every partition from the beginning once, so librdkafka fetches new
    records in the background; `catch_up(patient)` then asks the broker for the end offset of
    the patient's partition (murmur2 of the key, as every producer uses) and folds until it is
    reached, which is usually what is already fetched. Only `kid` and the wrapped `dataKey` of
    each record are kept (about 100 bytes a patient), never an unwrapped key; a tombstone drops
    the patient at once.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        keys: Mapping[KeyId, VaultKeys],
        current: KeyId,
        timeout: float = 30.0,
    ) -> None:
        self._kafka = kafka
        self.topic = topic
        self.keys = dict(keys)
        self.sealing = self.keys[current]
        self.timeout = timeout
        self._wrapped: dict[str, bytes] = {}
        self._tombstoned: set[str] = set()
        self._consumer: Consumer | None = None
        self._partitions = 0
        self._positions: dict[int, int] = {}
        self._caught_up: set[int] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PatientKeyStore(topic={self.topic}, patients={len(self._wrapped)})"

    def _open(self) -> Consumer:
        if self._consumer is None:
            config = consumer_config(
                self._kafka,
                DEADLETTER_KEYS_GROUP,
                **{
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": _FETCH_WAIT_MS,
                },
            )
            consumer = Consumer(config)
            meta = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                consumer.close()
                raise KafkaUnavailableError(f"key topic {self.topic} has no partitions")
            self._partitions = len(meta.partitions)
            consumer.assign(
                [
                    TopicPartition(self.topic, p, self._positions.get(p, OFFSET_BEGINNING))
                    for p in sorted(meta.partitions)
                ]
            )
            self._consumer = consumer
        return self._consumer

    def partition_of(self, patient: str) -> int:
        """The partition of a patient key (the Java client's murmur2 partitioner)."""
        self._open()
        return partition_for(patient.encode("utf-8"), self._partitions)

    def catch_up(self, patient: str) -> None:
        """Fold the patient's partition up to its current end; KafkaUnavailableError if not."""
        with self._lock:
            try:
                self._read(self.partition_of(patient))
            except KafkaException:
                self._drop_consumer()  # its metadata may be stale after a broker pause
                raise KafkaUnavailableError(f"key topic {self.topic} not readable") from None

    def partition_ready(self, patient: str) -> bool:
        """True once the patient's key partition was caught up with the broker."""
        return self._consumer is not None and self.partition_of(patient) in self._caught_up

    def catch_up_fetched(self, patient: str, *, fold: bool = True) -> None:
        """Like `catch_up`, but once the patient's partition was caught up with the broker, only
        fold what the background fetcher already brought (no broker round trip), or, with
        `fold=False`, nothing (the caller folded at the start of its batch: `fold_fetched`).

        For the research stage's vault registration, which runs for every new patient: it owns
        the patient's clinical partition, so the patient's key records come from this process,
        and a record another stage wrote in the last fetch interval (a dead letter's, rare) is
        the documented race of `patient_data_key`.
        """
        with self._lock:
            try:
                part = self.partition_of(patient)
                if part not in self._caught_up:
                    self._read(part)
                    self._caught_up.add(part)
                    return
                if fold:
                    self._fold_fetched()
            except KafkaException:
                self._drop_consumer()  # its metadata may be stale after a broker pause
                raise KafkaUnavailableError(f"key topic {self.topic} not readable") from None

    def fold_fetched(self) -> None:
        """Fold what the background fetcher already brought, once (for a batch of records:
        each `poll` lets go of the GIL, which a busy worker's other stages then hold for up to
        a switch interval, so one call per batch instead of one per new patient)."""
        with self._lock:
            if self._consumer is None:
                return
            try:
                self._fold_fetched()
            except KafkaException:
                self._drop_consumer()
                raise KafkaUnavailableError(f"key topic {self.topic} not readable") from None

    def _fold_fetched(self) -> None:
        consumer = self._open()
        while (msg := consumer.poll(0)) is not None:
            self._fold(msg)

    def _fold(self, msg: Any) -> None:
        at, offset, err = msg.partition(), msg.offset(), msg.error()
        if at is None or offset is None:
            return
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._positions[at] = max(self._positions.get(at, 0), offset)
            return
        self._apply(msg.key(), msg.value())
        self._positions[at] = offset + 1

    def _read(self, part: int) -> None:
        consumer = self._open()
        tp = TopicPartition(self.topic, part)
        _, high = watermark_offsets(consumer, tp)
        deadline = time.monotonic() + self.timeout
        while self._positions.get(part, 0) < high:
            if time.monotonic() > deadline:
                # A consumer whose fetches stopped after a broker pause stays stopped: the next
                # attempt opens a new one, from the positions folded so far.
                self._drop_consumer()
                raise KafkaUnavailableError(f"key topic {self.topic}: catch-up timed out")
            msg = consumer.poll(0.2)
            if msg is not None:
                self._fold(msg)

    def _drop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            # close() may wait on the stuck connection: let it finish in the background.
            threading.Thread(target=consumer.close, name="close-key-store", daemon=True).start()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if not key:
            return
        patient = key.decode("utf-8", "replace")
        if value is None:
            self._wrapped.pop(patient, None)
            self._tombstoned.add(patient)
            return
        self._tombstoned.discard(patient)
        try:
            record: Any = orjson.loads(value)
            kept = {"kid": str(record["kid"]), "dataKey": str(record["dataKey"])}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("key record not folded: code=malformed-record")
            kept = {"kid": "", "dataKey": ""}  # present, but never unwraps: not replaced
        self._wrapped[patient] = orjson.dumps(kept)

    def data_key(self, patient: str) -> bytes | None:
        """The patient's data key as last folded (None: no record, or it does not unwrap)."""
        value = self._wrapped.get(patient)
        return None if value is None else record_data_key(self.keys, value)

    def tombstoned(self, patient: str) -> bool:
        """True when the last folded record of the patient is a tombstone (an erasure)."""
        return patient in self._tombstoned

    def has_record(self, patient: str) -> bool:
        """True when a record of the patient was folded (whether or not it unwraps here)."""
        return patient in self._wrapped

    def close(self) -> None:
        """Close the consumer."""
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def patient_data_key(store: PatientKeyStore, patient: PatientKey, write: Write) -> bytes | None:
    """The patient's data key, sealing a new (mapping-free) vault record first when absent.

    The new record is acknowledged and folded back before the key is returned, and the key
    returned is the one of the record that is current after that write (if another writer
    sealed the patient meanwhile, its key wins). None when the record exists but does not
    unwrap with the keys held here, or when the patient's key was tombstoned (erased: no
    record is created again, even if the consent ledger has not shown the erasure yet).
    """
    store.catch_up(patient)
    if store.tombstoned(patient):
        return None
    if store.has_record(patient):
        return store.data_key(patient)
    write(patient.encode("utf-8"), seal_record(store.sealing, patient, {}))
    store.catch_up(patient)
    return store.data_key(patient)


@dataclass(frozen=True, slots=True)
class Protected:
    """The key, value and encryption headers a dead letter is written with."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, str], ...]


def protect(
    store: PatientKeyStore | None,
    patient: PatientKey | None,
    original_key: bytes | None,
    value: bytes | None,
    origin: Origin,
    *,
    erased: Erased,
    write: Write,
) -> Protected:
    """How to write one dead letter of a patient-keyed record (see the module docstring)."""
    if store is None or not patient:
        return Protected(original_key, value, ((H_ENCRYPTION, PLAINTEXT),))
    if erased(patient):
        return Protected(None, b"", ((H_ENCRYPTION, DROPPED_ERASED),))
    data_key = patient_data_key(store, patient, write)
    if data_key is None and store.tombstoned(patient):
        return Protected(None, b"", ((H_ENCRYPTION, DROPPED_ERASED),))
    if data_key is None:
        log.warning("dead letter payload dropped: code=data-key-unavailable")
        return Protected(None, b"", ((H_ENCRYPTION, DROPPED_NO_KEY),))
    key_id = data_key_id(data_key)
    sealed = seal_dead_letter(data_key, patient, value or b"", origin)
    return Protected(key_id.encode(), sealed, ((H_ENCRYPTION, SCHEME), (H_DATA_KEY_ID, key_id)))
