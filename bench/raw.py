"""Raw baselines on the shared broker: Kafka's own perf tools from the broker's jars, plain
confluent-kafka and aiokafka consume→produce loops, and the stream runtimes passing raw bytes
through: a Faust agent (framework overhead, with the tuned variants tried against it), the
product's batch runner and a quixstreams application (docs/decisions/0001-stream-runtime.md)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from bench import corpus
from bench.harness import Result, median_of, median_pair, ratio_result
from caremesh import topics
from caremesh.kafka import admin as kafka_admin
from caremesh.kafka import config as kafka_config
from caremesh.kafka.local import LocalKafka
from caremesh.settings import KafkaSettings
from caremesh.streams.batch import _next_offsets

PARTITIONS = 6
RECORD_SIZE = 1024


APPEND_TIME = (("message.timestamp.type", "LogAppendTime"),)
"""The config of a runtime passthrough's output topic: its records carry the time the broker
appended them, not the time the runtime handed them to its producer (a runtime that defers its
producer's flush to a checkpoint, as quixstreams does, would otherwise read as fast as its
`produce` calls)."""


def create_topics(
    bootstrap: str,
    names: list[str],
    partitions: int = PARTITIONS,
    extra_config: tuple[tuple[str, str], ...] = (),
) -> None:
    """Plain delete-retention topics for a baseline."""
    kafka_admin.ensure_topics(
        bootstrap,
        [
            topics.TopicSpec(
                n, topics.KeyKind.EVENT_ID, "bench", 3600_000, ("bench",), extra_config=extra_config
            )
            for n in names
        ],
        partitions=partitions,
        replication_factor=1,
    )


def fill(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Write `values` to `topic` with patient-like keys, acknowledged."""
    producer = Producer(kafka_config.producer_config(bootstrap, **{"linger.ms": 20}))
    for n, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, key=f"k{n % 5000}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("baseline input not acknowledged")


# -- Kafka's own tools --------------------------------------------------------------------


def _java_tool(main: str, args: list[str]) -> str:
    kafka = LocalKafka(KafkaSettings())
    out = subprocess.run(
        ["java", "-Xmx512m", "-cp", kafka.classpath(), main, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return out.stdout


def parse_producer_perf(stdout: str) -> float:
    """Records/s of the final summary line of `kafka-producer-perf-test`."""
    found = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", stdout)
    if not found:
        raise ValueError("no ProducerPerformance summary")
    return float(found[-1][1])


def parse_consumer_perf(stdout: str) -> float:
    """nMsg.sec of `kafka-consumer-perf-test`'s CSV line (header then one data row)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    for n, line in enumerate(lines):
        if "nMsg.sec" in line and n + 1 < len(lines):
            header = [h.strip() for h in line.split(",")]
            row = [c.strip() for c in lines[n + 1].split(",")]
            return float(row[header.index("nMsg.sec")])
    raise ValueError("no ConsumerPerformance result")


def kafka_producer_perf(bootstrap: str, topic: str, count: int) -> float:
    """org.apache.kafka.tools.ProducerPerformance, acks=all, idempotent, 1 KB records."""
    return parse_producer_perf(
        _java_tool(
            "org.apache.kafka.tools.ProducerPerformance",
            [
                "--topic",
                topic,
                "--num-records",
                str(count),
                "--record-size",
                str(RECORD_SIZE),
                "--throughput",
                "-1",
                "--producer-props",
                f"bootstrap.servers={bootstrap}",
                "acks=all",
                "enable.idempotence=true",
                "compression.type=lz4",
                "linger.ms=5",
            ],
        )
    )


def kafka_consumer_perf(bootstrap: str, topic: str, count: int) -> float:
    """org.apache.kafka.tools.ConsumerPerformance over `count` records."""
    return parse_consumer_perf(
        _java_tool(
            "org.apache.kafka.tools.ConsumerPerformance",
            [
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                "--messages",
                str(count),
                "--group",
                f"{topic}-perf-{uuid.uuid4().hex[:6]}",
                "--timeout",
                "60000",
            ],
        )
    )


# -- client loops -------------------------------------------------------------------------


def confluent_loop(bootstrap: str, source: str, target: str, count: int) -> float:
    """Records/s of consume → produce → flush → commit batches with confluent-kafka."""
    consumer = Consumer(
        kafka_config.consumer_config(
            bootstrap, f"{source}-ck-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}
        )
    )
    producer = Producer(kafka_config.producer_config(bootstrap, **{"linger.ms": 2}))
    consumer.subscribe([source])
    done, started = 0, 0.0
    try:
        while done < count:
            batch = [m for m in consumer.consume(500, 1.0) if m.error() is None]
            if not batch:
                continue
            started = started or time.perf_counter()
            for msg in batch:
                while True:
                    try:
                        producer.produce(
                            target, key=msg.key(), value=msg.value(), headers=msg.headers()
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.flush(60)
            consumer.commit(offsets=_next_offsets(batch), asynchronous=False)
            done += len(batch)
        return done / (time.perf_counter() - started)
    finally:
        consumer.close()


async def _aiokafka_loop(bootstrap: str, source: str, target: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{source}-aio-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    await consumer.start()
    await producer.start()
    done, started = 0, 0.0
    try:
        while done < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            started = started or time.perf_counter()
            futures = [
                await producer.send(target, key=r.key, value=r.value, headers=list(r.headers))
                for r in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(records)
        return done / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


def aiokafka_loop(bootstrap: str, source: str, target: str, count: int) -> float:
    """Records/s of the same loop with aiokafka (Faust's client), acks=all, idempotent."""
    return asyncio.run(_aiokafka_loop(bootstrap, source, target, count))


# -- Faust passthrough --------------------------------------------------------------------

_TUNED = {
    "stream_buffer_maxsize": 16384,
    "consumer_max_fetch_size": 4 * 1024 * 1024,
    "broker_commit_every": 10_000,
    "producer_linger": 0.005,
}

FAUST_VARIANTS: dict[str, tuple[dict[str, Any], float | None]] = {
    # Faust's idiomatic agent: one event at a time, Topic.send
    "events, Topic.send": ({}, None),
    "take(500, 50 ms), Topic.send, tuned": ({"mode": "take", "conf": _TUNED}, None),
    # the fastest agent found: batches, sent with the app's producer
    "take(500, 50 ms), app.producer.send, tuned": (
        {"mode": "take", "send": "producer", "conf": _TUNED},
        0.5,
    ),
}
"""Faust agents measured: name -> (variant for `bench.faust_passthrough`, target ratio). The
target (issue 8: framework overhead ≥ 0.5 of the aiokafka loop) is on the fastest agent;
the others are reported beside it."""


def output_span(bootstrap: str, topic: str, count: int, timeout: float) -> float:
    """Records/s between the first and the last timestamp of `count` records of `topic` (the
    broker's append time on a topic made with `APPEND_TIME`)."""
    from bench.ingest import _drain_timestamps

    stamps = _drain_timestamps(bootstrap, topic, count, timeout)
    if len(stamps) < max(count, 2):
        raise RuntimeError(f"{topic}: {len(stamps)} of {count} records")
    span = (max(stamps) - min(stamps)) / 1000
    return len(stamps) / span if span > 0 else float("inf")


def start_faust_passthrough(
    bootstrap: str, source: str, target: str, app_id: str, variant: dict[str, Any], log: Any
) -> subprocess.Popen[bytes]:
    """Start a `bench.faust_passthrough` worker (group `app_id`) forwarding `source` to
    `target`; its output goes to the binary file `log`."""
    env = dict(
        os.environ,
        CAREMESH_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        CAREMESH_KAFKA__PARTITIONS=str(PARTITIONS),
        CAREMESH_WORKER__APP_ID=app_id,
        CAREMESH_WORKER__WEB_PORT=str(free_port()),
        CAREMESH_WORKER__DATA_DIR=tempfile.mkdtemp(prefix="bench-faust-"),
        CAREMESH_LOG_LEVEL="WARNING",
        CAREMESH_PSEUDONYM__MASTER_KEY=secrets.token_hex(32),
        BENCH_FAUST_VARIANT=json.dumps(variant),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bench.faust_passthrough", source, target],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def faust_passthrough(
    bootstrap: str, prefix: str, source: str, count: int, variant: dict[str, Any]
) -> float:
    """Records/s of a Faust worker whose agent forwards raw records from `source`."""
    target = f"{prefix}faust-out-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [target], extra_config=APPEND_TIME)
    app_id = f"{prefix}faust-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp, Path(tmp, "faust.log").open("wb") as log:
        proc = start_faust_passthrough(bootstrap, source, target, app_id, variant, log)
        try:
            return output_span(bootstrap, target, count, 600)
        finally:
            proc.terminate()
            proc.wait(60)


def start_passthrough(
    python: str, module: str, bootstrap: str, source: str, target: str, group: str, log: Any
) -> subprocess.Popen[bytes]:
    """Start `python -m module BOOTSTRAP SOURCE TARGET GROUP` (`bench.batch_passthrough`,
    `bench.quix_passthrough`) forwarding `source` to `target`; its output goes to `log`."""
    return subprocess.Popen(
        [python, "-m", module, bootstrap, source, target, group],
        cwd=Path(__file__).resolve().parents[1],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _runtime_passthrough(
    bootstrap: str, prefix: str, source: str, count: int, python: str, module: str
) -> float:
    """Records/s of `start_passthrough(python, module, ...)` forwarding `source`."""
    name = module.rsplit(".", 1)[-1]
    target = f"{prefix}{name}-out-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [target], extra_config=APPEND_TIME)
    group = f"{prefix}{name}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp, Path(tmp, f"{name}.log").open("wb") as log:
        proc = start_passthrough(python, module, bootstrap, source, target, group, log)
        try:
            return output_span(bootstrap, target, count, 600)
        finally:
            proc.terminate()
            proc.wait(60)


def batch_passthrough(bootstrap: str, prefix: str, source: str, count: int) -> float:
    """Records/s of the product's `BatchRunner` forwarding raw records (`bench.batch_passthrough`)."""
    return _runtime_passthrough(
        bootstrap, prefix, source, count, sys.executable, "bench.batch_passthrough"
    )


def quix_passthrough(bootstrap: str, prefix: str, source: str, count: int) -> float:
    """Records/s of a quixstreams application forwarding raw records (`bench.quix_passthrough`,
    in its own environment: `bench.quix`)."""
    from bench.quix import ensure_env

    python = str(ensure_env())
    return _runtime_passthrough(bootstrap, prefix, source, count, python, "bench.quix_passthrough")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def results(
    bootstrap: str, prefix: str, count: int, repetitions: int, *, passthrough_only: bool = False
) -> list[Result]:
    """Kafka tools, client loops and the runtimes' passthroughs on `count` records of about 1 KB
    (`passthrough_only`: the aiokafka loop and the runtimes' rows, without the perf tools and
    the confluent-kafka loop)."""
    source, sink = f"{prefix}raw-in", f"{prefix}raw-out"
    perf = f"{prefix}raw-perf"
    create_topics(bootstrap, [source, sink, perf])
    fill(bootstrap, source, corpus.messages(count, 0))
    out: list[Result] = []
    prod = 0.0
    if not passthrough_only:
        prod, prod_s = median_of(repetitions, lambda: kafka_producer_perf(bootstrap, perf, count))
        cons, cons_s = median_of(repetitions, lambda: kafka_consumer_perf(bootstrap, perf, count))
        ck, ck_s = median_of(repetitions, lambda: confluent_loop(bootstrap, source, sink, count))
        out += [
            ratio_result("raw: kafka-producer-perf-test", prod, prod, "records/s", samples=prod_s),
            ratio_result("raw: kafka-consumer-perf-test", cons, prod, "records/s", samples=cons_s),
            ratio_result(
                "raw: confluent-kafka consume→produce loop vs producer perf tool",
                ck,
                prod,
                "records/s",
                samples=ck_s,
            ),
        ]
    # each repetition runs the aiokafka loop, then every Faust agent, the batch runner and the
    # quixstreams application: a ratio is the median of the repetitions' ratios (the loop moved
    # from 10,660 to 17,610 records/s between two runs, and by 40 % within one)
    aio_s: list[float] = []
    faust_s: dict[str, list[float]] = {name: [] for name in FAUST_VARIANTS}
    batch_s: list[float] = []
    quix_s: list[float] = []
    for _ in range(repetitions):
        aio_s.append(aiokafka_loop(bootstrap, source, sink, count))
        for name, (variant, _target) in FAUST_VARIANTS.items():
            faust_s[name].append(faust_passthrough(bootstrap, prefix, source, count, variant))
        batch_s.append(batch_passthrough(bootstrap, prefix, source, count))
        quix_s.append(quix_passthrough(bootstrap, prefix, source, count))
    aio = statistics.median(aio_s)
    if not passthrough_only:
        out.append(
            ratio_result(
                "raw: aiokafka consume→produce loop vs producer perf tool",
                aio,
                prod,
                "records/s",
                samples=aio_s,
            )
        )
    for name, (variant, target) in FAUST_VARIANTS.items():
        samples = faust_s[name]
        value, base = median_pair(list(zip(samples, aio_s, strict=True)))
        each = ", ".join(f"{v / a:.2f}" for v, a in zip(samples, aio_s, strict=True))
        out.append(
            ratio_result(
                f"Faust passthrough ({name}) vs aiokafka loop",
                value,
                base,
                "records/s",
                at_least=target,
                samples=samples,
                notes=f"{json.dumps(variant, sort_keys=True)}; each repetition's ratio: {each}",
            )
        )
    fastest = list(FAUST_VARIANTS)[-1]
    for name, samples, note in (
        (f"Faust passthrough ({fastest})", faust_s[fastest], "bench/faust_passthrough.py"),
        (
            "quixstreams passthrough",
            quix_s,
            "bench/quix_passthrough.py, quixstreams 3.28.1 on confluent-kafka 2.12.2 "
            "(bench/quixstreams-requirements.txt)",
        ),
    ):
        value, base = median_pair(list(zip(samples, batch_s, strict=True)))
        each = ", ".join(f"{v / b:.2f}" for v, b in zip(samples, batch_s, strict=True))
        out.append(
            ratio_result(
                f"{name} vs batch runner passthrough",
                value,
                base,
                "records/s",
                samples=samples,
                notes=f"{note}; the batch runner: bench/batch_passthrough.py (each repetition: "
                f"{', '.join(f'{b:,.0f}' for b in batch_s)} records/s); each repetition's "
                f"ratio: {each}",
            )
        )
    return out
