from datetime import UTC, datetime

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.kafka import config as kafka_config


def test_message_ids_are_stable_and_source_scoped() -> None:
    a = envelope.message_id("hospital-a", "MSG0001")
    assert a == envelope.message_id("hospital-a", "MSG0001")
    assert a != envelope.message_id("hospital-b", "MSG0001")
    assert envelope.body_message_id("h", b"{}") == envelope.body_message_id("h", b"{}")
    assert envelope.body_message_id("h", b"{}") != envelope.body_message_id("h", b"{ }")
    assert envelope.child_message_id(a, 0) != envelope.child_message_id(a, 1)
    assert envelope.child_message_id(a, 3) == envelope.child_message_id(a, 3)


def test_headers_follow_cloudevents_kafka_binding_and_round_trip() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    env = Envelope(
        "id-1",
        "urn:caremesh:source:h1",
        "org.hl7.fhir.Observation",
        when,
        extra={envelope.H_FHIR_RELEASE: "R4B"},
    )
    headers = env.headers()
    names = [k for k, _ in headers]
    assert names[:6] == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "content-type",
    ]
    assert dict(headers)["ce_specversion"] == b"1.0"
    assert dict(headers)["content-type"] == b"application/fhir+json"
    back = Envelope.from_headers(headers)
    assert back == env


def test_producer_config_is_idempotent_with_java_partitioner() -> None:
    cfg = kafka_config.producer_config("127.0.0.1:9092", **{"linger.ms": 0})
    assert cfg["enable.idempotence"] is True
    assert cfg["acks"] == "all"
    assert cfg["partitioner"] == "murmur2_random"
    assert cfg["linger.ms"] == 0


def test_ids_are_rfc4122_version_5_uuids() -> None:
    import uuid

    parent = envelope.message_id("hospital-a", "MSG0001")
    ns = uuid.UUID("6b1c7f0e-3d2a-5e8f-9a41-0c5d2e7b9f13")
    assert parent == str(uuid.uuid5(ns, "hospital-a\x1fMSG0001"))
    assert envelope.child_message_id(parent, 7) == str(uuid.uuid5(ns, f"{parent}\x1e7"))
    assert uuid.UUID(parent).version == 5
