"""The MLLP message handler: which ACK for which frame, and nothing written unless accepted."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from caremesh.connectors.mllp import MllpServer
from caremesh.connectors.mllp_framing import Frame, Oversized
from caremesh.envelope import HL7V2, header_value, message_id
from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.io import Ack, Output
from caremesh.metrics import Metrics
from caremesh.settings import Settings, SourceSettings
from tests.support.settings import evolve
from tests.unit.connectors.connectors_synth import SYNTH_FAMILY, hl7


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[Output] = []

    async def partition_count(self, topic: str) -> int:
        if self.fail:
            raise KafkaUnavailableError("no metadata")
        return 3

    async def send_all(self, records: Sequence[Output]) -> list[Ack]:
        if self.fail:
            raise KafkaUnavailableError("write not acknowledged: _MSG_TIMED_OUT")
        self.sent.extend(records)
        return [Ack(r.topic, 0, i) for i, r in enumerate(records)]


def server(producer: FakeProducer) -> MllpServer:
    settings = Settings(sources=[SourceSettings(id="SYNTH-HOSP")])
    settings = evolve(
        settings,
        kafka__topic_prefix="p.",
    )
    return MllpServer(settings, producer, Metrics())  # type: ignore[arg-type]


def msa(ack: bytes) -> list[str]:
    segment = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return segment.decode().split("|")


@pytest.mark.parametrize(
    "message_type", ["ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A08", "ORU^R01"]
)
async def test_supported_messages_are_written_then_acked_aa(message_type: str) -> None:
    producer = FakeProducer()
    raw = hl7(message_type, control_id="C-42")
    ack = await server(producer).handle(Frame(raw))
    assert msa(ack)[1:3] == ["AA", "C-42"]
    [record] = producer.sent
    assert record.topic == "p.ingest.hl7v2.v1"
    assert record.value == raw
    assert record.key == b"C-42"
    assert header_value(record.headers, "ce_id") == message_id("SYNTH-HOSP", "C-42")
    assert header_value(record.headers, "ce_source") == "urn:caremesh:source:SYNTH-HOSP"
    assert header_value(record.headers, "content-type") == HL7V2


async def test_unknown_facility_gets_default_source_and_facility_scoped_id() -> None:
    producer = FakeProducer()
    await server(producer).handle(Frame(hl7(control_id="C-1", facility="OTHER")))
    [record] = producer.sent
    assert header_value(record.headers, "ce_source") == "urn:caremesh:source:mllp"
    assert header_value(record.headers, "ce_id") == message_id("mllp", "OTHER|C-1")


@pytest.mark.parametrize(
    ("event", "code", "err"),
    [
        (Frame(b"PID|1||X\r"), "AR", "100"),
        (Frame(hl7("ADT^A05")), "AR", "200"),
        (Frame(hl7("SIU^S12")), "AR", "200"),
        (Frame(hl7(control_id="")), "AE", "102"),
        (Frame(b"MSH|^^^^|A|B|C|D|2024||ADT^A01|X1|P|2.5\r"), "AE", "102"),
        (Oversized(hl7()[:60], 10_000_000), "AR", "207"),
    ],
    ids=["no MSH", "A05", "SIU", "no control id", "malformed MSH", "too large"],
)
async def test_refused_frames_get_an_error_ack_and_are_not_written(
    event: Frame | Oversized, code: str, err: str
) -> None:
    producer = FakeProducer()
    ack = await server(producer).handle(event)
    assert msa(ack)[1] == code
    assert any(s.startswith(b"ERR") and f"|{err}^".encode() in s for s in ack.split(b"\r"))
    assert producer.sent == []
    assert SYNTH_FAMILY.encode() not in ack


async def test_kafka_down_answers_ae_so_the_sender_retries() -> None:
    ack = await server(FakeProducer(fail=True)).handle(Frame(hl7(control_id="C-9")))
    assert msa(ack)[1:3] == ["AE", "C-9"]
