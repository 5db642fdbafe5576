"""The partition of an ingest record: one patient's messages in one partition, in send order.

DESIGN §2 keys `ingest.fhir.v1` and `ingest.hl7v2.v1` by the source message id (the `ce_id`
stays derivable from the key, and duplicates of one message meet in one partition of the
validate stage's dedup state). Left to the partitioner, that key spreads one patient's messages
over every partition, and the validate stage, which reads partitions independently, may then
write them to `clinical.fhir.v1` in another order than the sender's (issue 9, item 2). So the
edges (HTTP ingest API, MLLP listener) keep the message id as the record KEY but choose the
PARTITION themselves from a per-patient *ordering key*, hashed with the same Java murmur2
partitioner every caremesh producer uses (`kafka.config.producer_config`, aiokafka's default
partitioner): `(murmur2(key) & 0x7fffffff) % partitions`.

Ordering keys, computed cheaply at the edge (no extra validation):

- FHIR: the patient key the validate stage's core already found for the message's records
  (`fhir.ingest.process_ingest`, `fhir.patient_key`), when every record of the message that
  points to a patient points to the same one (entries about no patient, such as an
  Organization, do not count): the INS, else `<source>/Patient/<id>`. Learned mappings are
  state of the validate stage and unknown at the edge, so a source that names one patient
  sometimes by INS and sometimes by local id only gets order per spelling. A message about no
  patient, or about several (a Bundle mixing patients), has no ordering key and goes where its
  record key would.
- HL7 v2: the PID-3 repetition that is the INS (PID-3.4.2 `1.2.250.1.213.1.4.8` or PID-3.5
  `INS`, as `fhir.hl7v2_map` reads it), else `<source>/Patient/<PID-3.1 of the first
  repetition>`; a message without PID-3 goes where its key (MSH-10) would. The hl7v2 stage
  writes each mapped Bundle to the same partition number of `ingest.fhir.v1` as its raw
  message (the catalogue gives both topics the same count), so the order holds through the
  mapping too.

Patient keys never leave the process: only the partition number is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from caremesh.fhir.hl7v2 import Separators, component_of
from caremesh.fhir.ingest import ClinicalRecord
from caremesh.kafka.partitioning import partition_for

INS_OID: Final = "1.2.250.1.213.1.4.8"
_SEGMENT_END = re.compile(rb"[\r\n]+")


def fhir_ordering_key(records: Sequence[ClinicalRecord]) -> str | None:
    """The one patient every record of a FHIR message concerns, or None (see module docstring)."""
    keys = {rec.key for rec in records if rec.key_kind != "non-patient"}
    return str(next(iter(keys))) if len(keys) == 1 else None


def hl7v2_ordering_key(source: str, raw: bytes, seps: Separators) -> str | None:
    """The patient of an HL7 v2 message from its raw PID segment, or None without PID-3."""
    for segment in _SEGMENT_END.split(raw):
        if not segment.startswith(b"PID"):
            continue
        fields = segment.decode("latin-1").split(seps.field)
        if len(fields) < 4 or not fields[3]:
            return None
        repetitions = fields[3].split(seps.repetition)
        for rep in repetitions:
            value = component_of(rep, seps, 1)
            if value and (
                component_of(rep, seps, 4, 2) == INS_OID or component_of(rep, seps, 5) == "INS"
            ):
                return value
        first = component_of(repetitions[0], seps, 1)
        return f"{source}/Patient/{first}" if first else None
    return None


def ingest_partition(ordering_key: str | None, record_key: bytes, partitions: int) -> int:
    """The ingest partition of a message: by its ordering key, else by its record key (the
    partition the producer's partitioner would have chosen for that key)."""
    return partition_for(ordering_key.encode() if ordering_key else record_key, partitions)
