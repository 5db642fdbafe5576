"""The research stage's handlers over plain records: consent per study decides, the record is
pseudonymised under the study's pseudonym, the vault record comes before the first one, and a
withdrawal retracts the studies that had the patient (no broker)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.settings import Settings, StudySettings
from caremesh.streams import research as stage
from caremesh.streams.record import Record
from caremesh.tables.state import PartitionState
from caremesh.topics import CONSENT_EVENTS
from tests.unit.consent.consent_builders import provision, r4_consent
from tests.unit.streams.stage_support import FixedConsents, clinical

PATIENT = "2990175123456"
NOW = datetime.now(UTC).timestamp()


def _settings() -> Settings:
    return Settings(
        pseudonym={"master_key": SecretStr("11" * 32)},
        studies=[
            StudySettings(id="opt-out", consent_default="permit"),
            StudySettings(id="opt-in", consent_default="deny"),
        ],
    )


def _context(gate: FixedConsents) -> stage.ResearchContext:
    settings = _settings()
    studies = stage.study_runtimes(settings)
    waited: list[tuple[int, int]] = []
    return stage.ResearchContext(
        studies=studies,
        topics={s.settings.id: f"t.research.{s.settings.id}.v1" for s in studies},
        keys_topic="t.keys.patient.v1",
        sealing=stage.stage_vault_keys(settings.pseudonym),
        released=PartitionState(settings.kafka, "t.research-released"),
        gate=gate,
        data_key=lambda _patient: None,
        wait_folded=lambda partition, offset: waited.append((partition, offset)),
        metrics=Metrics(),
    )


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "subject": {"reference": "Patient/p-1", "display": "Synthetic Name"},
        "effectiveDateTime": "2026-11-30T10:00:00Z",
        "valueQuantity": {"value": 91, "unit": "%"},
    }


def _by_topic(outputs: list[Output]) -> dict[str, list[Output]]:
    out: dict[str, list[Output]] = {}
    for o in outputs:
        out.setdefault(o.topic, []).append(o)
    return out


def test_only_the_studies_the_consent_permits_get_the_pseudonymised_record() -> None:
    ctx = _context(FixedConsents(stage.STAGE, {}))
    outputs = stage.handle(ctx, clinical(PATIENT, _observation(), at=NOW))
    topics = _by_topic(outputs)
    assert "t.research.opt-in.v1" not in topics  # said nothing: an opt-in study gets nothing
    (record,) = topics["t.research.opt-out.v1"]
    sent = orjson.loads(record.value or b"")
    assert sent["resourceType"] == "Observation"
    assert "Synthetic Name" not in json.dumps(sent)
    assert PATIENT.encode() not in (record.value or b"")
    assert record.key != PATIENT.encode()  # keyed by the study pseudonym
    # the vault record is written before the first research record, then the released state
    order = [
        o.topic for o in outputs if o.topic != "t.audit.v1" and not o.topic.endswith("audit.v1")
    ]
    assert order.index("t.keys.patient.v1") < order.index("t.research.opt-out.v1")
    assert outputs[-1].state
    assert outputs[-1].value == b"opt-out"


def test_a_patient_who_opts_in_reaches_the_opt_in_study_too() -> None:
    opt_in = r4_consent("c-in", provision("permit", purposes=["HRESCH"]), scope="research")
    ctx = _context(FixedConsents(stage.STAGE, {PATIENT: [opt_in]}))
    topics = _by_topic(stage.handle(ctx, clinical(PATIENT, _observation(), at=NOW)))
    assert len(topics["t.research.opt-in.v1"]) == 1
    assert len(topics["t.research.opt-out.v1"]) == 1


def test_a_withdrawal_retracts_the_released_studies_and_nothing_else() -> None:
    gate = FixedConsents(stage.STAGE, {})
    ctx = _context(gate)
    first = stage.handle(ctx, clinical(PATIENT, _observation(), at=NOW))
    pseudonym = _by_topic(first)["t.research.opt-out.v1"][0].key
    withdraw = r4_consent("c-out", provision("deny", purposes=["HRESCH"]), scope="research")
    gate.by_patient = FixedConsents(stage.STAGE, {PATIENT: [withdraw]}).by_patient
    consent_event = Record(topic=CONSENT_EVENTS, key=PATIENT.encode(), value=b"{}", offset=7)
    outputs = stage.handle(ctx, consent_event)
    topics = _by_topic(outputs)
    (retraction,) = topics["t.research.opt-out.v1"]
    assert retraction.key == pseudonym
    assert "t.research.opt-in.v1" not in topics
    assert outputs[-1].state
    assert outputs[-1].value is None  # no study holds the patient now
    # a second consent event finds nothing released: nothing more to retract
    assert stage.handle(ctx, consent_event) == []


def test_a_consent_event_for_a_patient_no_study_received_costs_nothing() -> None:
    ctx = _context(FixedConsents(stage.STAGE, {}))
    assert stage.handle(ctx, Record(topic=CONSENT_EVENTS, key=b"other", value=b"{}")) == []


def test_the_stage_runs_an_upstream_rule_file_with_the_studys_derived_keys(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "upstream.json"
    config = {
        "fhirVersion": "R4",
        "fhirPathRules": [
            {"path": "Resource.id", "method": "cryptoHash"},
            {"path": "Observation.nodesByType('Reference').display", "method": "redact"},
        ],
        "parameters": {"cryptoHashKey": "key-in-the-file", "dateShiftScope": "resource"},
    }
    rules.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(config))
    settings = Settings(
        pseudonym={"master_key": SecretStr("11" * 32)},
        studies=[StudySettings(id="upstream", rules=str(rules))],
    )
    (study,) = stage.study_runtimes(settings)
    out = study.anonymizer.apply(_observation())
    in_file = hmac.new(b"key-in-the-file", b"obs-1", hashlib.sha256).hexdigest()
    assert len(out["id"]) == 64
    assert out["id"] != in_file  # the study's derived key, never the file's
    assert "display" not in out["subject"]
