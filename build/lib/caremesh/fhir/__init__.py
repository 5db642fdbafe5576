"""FHIR parsing and validation (R4/R4B/R5), patient keys, and HL7 v2 → FHIR mapping.

Plain functions over plain data (no Kafka, no HTTP): the validate and hl7v2 stages and the
MLLP listener are thin shells over `process_ingest`, `parse_hl7`, `build_ack` and `hl7v2_to_fhir`.
"""

from caremesh.fhir.hl7v2 import Hl7Message, build_ack, parse_hl7
from caremesh.fhir.hl7v2_map import hl7v2_to_fhir, map_hl7v2
from caremesh.fhir.ingest import ClinicalRecord, IngestResult, Rejection, process_ingest
from caremesh.fhir.patient_key import INS_SYSTEM, KeyResult, LearnedMapping, patient_key
from caremesh.fhir.validate import (
    Release,
    ValidResource,
    release_from_content_type,
    validate_resource,
)

__all__ = [
    "INS_SYSTEM",
    "ClinicalRecord",
    "Hl7Message",
    "IngestResult",
    "KeyResult",
    "LearnedMapping",
    "Rejection",
    "Release",
    "ValidResource",
    "build_ack",
    "hl7v2_to_fhir",
    "map_hl7v2",
    "parse_hl7",
    "patient_key",
    "process_ingest",
    "release_from_content_type",
    "validate_resource",
]
