"""The MLLP listener over real TCP sockets, writing to the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from caremesh.connectors.mllp import MllpServer
from caremesh.connectors.mllp_framing import END, START, frame
from caremesh.envelope import HL7V2, message_id
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings, SourceSettings
from tests.integration.connectors.conftest import closed_address, headers_of, read_topic
from tests.support.settings import evolve
from tests.unit.connectors.connectors_synth import hl7

pytestmark = pytest.mark.kafka


def hl7_topic(settings: Settings) -> str:
    return settings.kafka.topic_prefix + "ingest.hl7v2.v1"


@pytest.fixture
async def mllp(settings: Settings, producer: AsyncProducer) -> AsyncIterator[MllpServer]:
    settings.sources.append(SourceSettings(id="SYNTH-HOSP"))
    server = MllpServer(settings, producer, Metrics())
    await server.start()
    yield server
    await server.stop()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: MllpServer) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ack(self) -> tuple[str, str]:
        """(MSA-1, MSA-2) of the next ACK."""
        data = await asyncio.wait_for(self.reader.readuntil(END), 30)
        assert data.startswith(START)
        msa = next(s for s in data[1:-2].split(b"\r") if s.startswith(b"MSA")).decode()
        fields = msa.split("|")
        return fields[1], fields[2]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_adt_and_oru_are_in_kafka_when_acked_aa(mllp: MllpServer, settings: Settings) -> None:
    client = await Client.connect(mllp)
    sent = {"A01-1": hl7("ADT^A01", "A01-1"), "R01-1": hl7("ORU^R01", "R01-1")}
    for control, raw in sent.items():
        await client.send(frame(raw))
        assert await client.ack() == ("AA", control)
    await client.close()
    records = await asyncio.to_thread(
        read_topic, settings.kafka.bootstrap_servers, hl7_topic(settings), 2
    )
    by_key = {r.key().decode(): r for r in records}
    assert set(by_key) == set(sent)
    for control, raw in sent.items():
        record = by_key[control]
        assert record.value() == raw
        headers = headers_of(record)
        assert headers["ce_id"] == message_id("SYNTH-HOSP", control)
        assert headers["ce_source"] == "urn:caremesh:source:SYNTH-HOSP"
        assert headers["content-type"] == HL7V2


async def test_refusals_then_the_same_connection_still_works(
    mllp: MllpServer, settings: Settings
) -> None:
    client = await Client.connect(mllp)
    await client.send(b"garbage before any frame\r\n" + frame(b"PID|1||X\r"))
    assert (await client.ack())[0] == "AR"
    await client.send(frame(hl7("ADT^A05", "A05-1")))
    assert await client.ack() == ("AR", "A05-1")
    await client.send(frame(hl7("ADT^A01", "BIG-1") + b"OBX|" + b"x" * 70_000 + b"\r"))
    assert await client.ack() == ("AR", "BIG-1")
    await client.send(START + hl7("ADT^A08", "TRUNC-1")[:30])  # abandoned by the next start
    await client.send(frame(hl7("ADT^A08", "OK-1")))
    assert await client.ack() == ("AA", "OK-1")
    await client.close()
    records = await asyncio.to_thread(
        read_topic, settings.kafka.bootstrap_servers, hl7_topic(settings), 1
    )
    assert [r.key() for r in records] == [b"OK-1"]


@pytest.mark.parametrize("abort", [False, True], ids=["close", "reset"])
async def test_a_client_leaving_mid_frame_does_not_stop_the_server(
    mllp: MllpServer, settings: Settings, abort: bool
) -> None:
    gone = await Client.connect(mllp)
    await gone.send(START + hl7("ADT^A01", "LOST-1")[:40])
    if abort:
        gone.writer.transport.abort()
    else:
        await gone.close()
    client = await Client.connect(mllp)
    await client.send(frame(hl7("ADT^A02", "NEXT-1")))
    assert await client.ack() == ("AA", "NEXT-1")
    await client.close()
    records = await asyncio.to_thread(
        read_topic, settings.kafka.bootstrap_servers, hl7_topic(settings), 1
    )
    assert [r.key() for r in records] == [b"NEXT-1"]


async def test_five_connections_of_twenty_messages_all_get_aa(
    mllp: MllpServer, settings: Settings
) -> None:
    async def one_connection(number: int) -> list[tuple[str, str]]:
        client = await Client.connect(mllp)
        acks = []
        for index in range(20):
            raw = hl7("ORU^R01" if index % 2 else "ADT^A04", f"C{number}-{index}")
            # send in two pieces, so that frames also arrive split across reads
            await client.send(frame(raw)[:25])
            await asyncio.sleep(0)
            await client.send(frame(raw)[25:])
            acks.append(await client.ack())
        await client.close()
        return acks

    results = await asyncio.gather(*(one_connection(n) for n in range(5)))
    for number, acks in enumerate(results):
        assert acks == [("AA", f"C{number}-{i}") for i in range(20)]  # in order
    records = await asyncio.to_thread(
        read_topic, settings.kafka.bootstrap_servers, hl7_topic(settings), 100
    )
    assert len(records) == 100
    assert {r.key() for r in records} == {f"C{n}-{i}".encode() for n in range(5) for i in range(20)}


async def test_kafka_down_answers_ae(settings: Settings) -> None:
    dead = AsyncProducer(closed_address(), **{"message.timeout.ms": 1500, "log_level": 0})
    server = MllpServer(settings, dead, Metrics())
    await server.start()
    try:
        client = await Client.connect(server)
        await client.send(frame(hl7("ADT^A01", "DOWN-1")))
        assert await client.ack() == ("AE", "DOWN-1")
        await client.close()
    finally:
        await server.stop()
        dead.close(timeout=1)


async def test_idle_connections_are_closed(settings: Settings, producer: AsyncProducer) -> None:
    settings = evolve(
        settings,
        mllp__idle_timeout_seconds=0.3,
    )
    server = MllpServer(settings, producer, Metrics())
    await server.start()
    try:
        client = await Client.connect(server)
        assert await asyncio.wait_for(client.reader.read(), 5) == b""  # closed by the server
    finally:
        await server.stop()
