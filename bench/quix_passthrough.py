"""A quixstreams application whose only dataframe forwards raw records (the library's
per-record cost, measured beside the batch runner and Faust: docs/decisions/0001).

Runs in an environment of its own (`bench.quix.ensure_env`): quixstreams 3.28 requires
confluent-kafka < 2.13, pydantic < 2.14 and pydantic-settings < 2.16, older than caremesh's pins,
so it cannot share caremesh's environment, and this module imports nothing of caremesh.
Run as `python -m bench.quix_passthrough BOOTSTRAP IN OUT GROUP`; it runs until terminated.
Producers idempotent with acks=all, at-least-once (a checkpoint flushes the producer, then
commits), with the product producers' linger, compression and partitioner.
"""

from __future__ import annotations

import sys

from quixstreams import Application


def main(argv: list[str]) -> int:
    bootstrap, source, target, group = argv
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        producer_extra_config={
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
        },
        auto_create_topics=False,
        loglevel="WARNING",
    )
    src = app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
    dst = app.topic(target, key_serializer="bytes", value_serializer="bytes")
    app.dataframe(src).to_topic(dst)
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
