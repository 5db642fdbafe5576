"""Crypto-shredded dead letters on the real broker: a record that makes the research stage
raise is dead-lettered sealed under the patient's vault data key (keyed by a key id, not the
patient key); the operator tool decrypts it, with an audit, until `POST /Patient/$erase`; after
that nobody can, and the tool only says that the patient was erased."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from confluent_kafka import Message
from pydantic import SecretStr

from caremesh import envelope, topics
from caremesh.cli.deadletter import (
    EXIT_ERASED,
    Coordinates,
    list_dead_letters,
    show_dead_letter,
)
from caremesh.connectors.consent_api import create_app
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings, StudySettings
from caremesh.tables import deadletters
from caremesh.tables.consent_ledger import ConsentLedger
from tests.integration.consent.servers import serve
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import INS

pytestmark = pytest.mark.kafka

ADMIN = {"Authorization": "Bearer tok-synth-admin-dl51"}
MASTER = secrets.token_hex(32)
MARKER = "SYN-POISON-DL"
CANARY = "SYN-CANARY-DEADLETTER-9"
KNOWN, NEW = "2990175000041", "2990175000042"
STUDY = {"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"}


def _settings(ns: Namespace) -> Settings:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=ns.kafka,
        kafka__topic_prefix=ns.prefix,
        kafka__partitions=ns.partitions,
        consent_api__admins={"alice": SecretStr(ADMIN["Authorization"][7:])},
        pseudonym__master_key=SecretStr(MASTER),
        studies=[StudySettings(**STUDY)],
    )
    return settings


@pytest.fixture
def api_url(namespace: Namespace) -> Iterator[str]:
    producer = AsyncProducer(namespace.kafka)
    ledger = ConsentLedger(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    with serve(create_app(_settings(namespace), producer, ledger, Metrics())) as url:
        yield url
    producer.close(timeout=10)


def _obs(ins: str, note: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "id": f"obs-{ins[-4:]}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"identifier": {"system": INS, "value": ins}},
            "note": [{"text": note}],
            "valueQuantity": {"value": 9.4, "unit": "%"},
        }
    )


def _where(msg: Message) -> Coordinates:
    return Coordinates(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _cli(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    env = ns.env(CAREMESH_PSEUDONYM__MASTER_KEY=MASTER, CAREMESH_LOG_LEVEL="WARNING")
    return subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", "deadletter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dead_letters_decrypt_until_erasure_then_never(
    namespace: Namespace, spawn: Callable[..., Proc], api_url: str
) -> None:
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "research"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_STUDIES=json.dumps([STUDY]),
            CAREMESH_PSEUDONYM__MASTER_KEY=MASTER,
            CAREMESH_WORKER__FAULT_MARKER=MARKER,
        ),
    )
    worker_ready(worker, port)
    settings = _settings(namespace)
    # KNOWN is released to the study first (its vault record exists); NEW is dead-lettered
    # before anything else (its record is created for the dead letter), then released: the
    # research stage must keep that data key when it re-seals the record.
    poison = {ins: _obs(ins, f"{MARKER} {CANARY}-{ins}") for ins in (KNOWN, NEW)}
    namespace.produce("clinical.fhir.v1", [(KNOWN.encode(), _obs(KNOWN, "fine"), [])])
    assert len(namespace.consume("research.study-b.v1", 1)) == 1
    namespace.produce("clinical.fhir.v1", [(ins.encode(), poison[ins], []) for ins in (KNOWN, NEW)])
    letters = namespace.consume(topics.DEADLETTER, 2)
    assert len(letters) == 2
    namespace.produce("clinical.fhir.v1", [(NEW.encode(), _obs(NEW, "fine"), [])])
    assert len(namespace.consume("research.study-b.v1", 2)) == 2

    by_origin: dict[str, Message] = {}
    for msg in letters:
        headers = envelope.headers_dict(msg.headers())
        assert headers[deadletters.H_ENCRYPTION] == deadletters.SCHEME
        assert headers[deadletters.H_DATA_KEY_ID] == (msg.key() or b"").decode()
        assert headers[envelope.H_ERROR_CODE] == "stage-error"
        for ins in (KNOWN, NEW):  # no identifier or payload in key, headers or value
            assert ins.encode() not in (msg.key() or b"") + (msg.value() or b"")
            assert not any(ins in v for v in headers.values())
        assert CANARY.encode() not in (msg.value() or b"")
        assert MARKER.encode() not in (msg.value() or b"")
        by_origin[headers[envelope.H_ORIGIN_OFFSET]] = msg
    assert len({m.key() for m in letters}) == 2  # one key id per patient data key

    listed = io.StringIO()
    assert list_dead_letters(settings.kafka, listed, stage="research", code="stage-error") == 2
    assert f"encryption={deadletters.SCHEME}" in listed.getvalue()
    for secret in (CANARY, KNOWN, NEW, MARKER):
        assert secret not in listed.getvalue()
    assert list_dead_letters(settings.kafka, io.StringIO(), code="invalid-fhir") == 0
    assert list_dead_letters(settings.kafka, io.StringIO(), stage="research") == 2

    shown: dict[str, str] = {}
    for msg in letters:
        out = io.StringIO()
        status = show_dead_letter(
            settings, _where(msg), out, operator="olga", reason="ticket OPS-51"
        )
        assert status == 0, out.getvalue()
        text = out.getvalue()
        patient = next(ins for ins in (KNOWN, NEW) if f"{CANARY}-{ins}" in text)
        assert f"key: {patient}\n" in text
        assert poison[patient].decode() in text
        shown[patient] = str(_where(msg))
    assert set(shown) == {KNOWN, NEW}
    audits = [orjson.loads(m.value()) for m in namespace.consume_all(topics.AUDIT, settle=2)]
    views = [a for a in audits if a.get("subtype", [{}])[0].get("code") == "deadletter-view"]
    assert sorted(a["entity"][0]["what"]["identifier"]["value"] for a in views) == [KNOWN, NEW]
    assert {a["agent"][0]["who"]["identifier"]["value"] for a in views} == {"olga"}

    erased = httpx.post(f"{api_url}/Patient/$erase", json={"patient": KNOWN}, headers=ADMIN)
    assert erased.status_code == 200, erased.text

    after = _cli(namespace, "show", shown[KNOWN], "--reason", "ticket OPS-52", "--operator", "o")
    assert after.returncode == EXIT_ERASED, after.stderr
    assert "the patient was erased" in after.stdout
    for secret in (CANARY, KNOWN, MARKER):
        assert secret not in after.stdout
    assert len(after.stdout.strip().splitlines()) == 1
    still = io.StringIO()
    where = next(_where(m) for m in letters if str(_where(m)) == shown[NEW])
    assert show_dead_letter(settings, where, still, operator="olga", reason="OPS-53") == 0
    assert f"{CANARY}-{NEW}" in still.getvalue()

    # a record of the erased patient that fails later keeps no key and no payload, and its
    # vault record stays a tombstone: no key carries the erased patient's dead letters any more
    namespace.produce("clinical.fhir.v1", [(KNOWN.encode(), poison[KNOWN], [])])
    seen = {(m.topic(), m.partition(), m.offset()) for m in letters}
    third = namespace.consume(topics.DEADLETTER, 3)
    late = next(m for m in third if (m.topic(), m.partition(), m.offset()) not in seen)
    assert (late.key(), late.value()) == (None, b"")
    assert envelope.headers_dict(late.headers())[deadletters.H_ENCRYPTION] == (
        deadletters.DROPPED_ERASED
    )
    known = [
        m for m in namespace.consume_all(topics.KEYS_PATIENT, settle=1) if m.key() == KNOWN.encode()
    ]
    assert known[-1].value() is None
    assert os.environ.get("CAREMESH_WORKER__FAULT_MARKER") is None  # the hook stays test-only
