"""The one produce-and-wait helper: a write nobody acknowledges raises, naming what and the
client's code, never the record's content."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.io import Output, produce_and_wait
from tests.support.kafka import free_port


def test_an_unacknowledged_write_raises_without_its_content() -> None:
    producer = Producer(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 500}
    )
    secret = b"2990175123456"
    with pytest.raises(KafkaUnavailableError) as caught:
        produce_and_wait(producer, [Output("t.topic", secret, secret)], "vault record", 5)
    text = str(caught.value)
    assert text.startswith("vault record not acknowledged")
    assert secret.decode() not in text
