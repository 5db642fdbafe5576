"""The product's stream runtime forwarding raw records: a `BatchRunner` whose handler passes
each record through (the runtime's own cost: the baseline of the Faust and quixstreams rows).

Run as `python -m bench.batch_passthrough BOOTSTRAP IN OUT GROUP`; it runs until terminated.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from confluent_kafka import Message

from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.streams.batch import BatchRunner, Handler


def passthrough(target: str) -> Handler:
    """A handler writing each record's key, value and headers to `target` unchanged."""

    def forward(msg: Message) -> list[Output]:
        headers = [(str(h[0]), h[1]) for h in (msg.headers() or [])]
        return [Output(target, msg.key(), msg.value(), headers)]

    return forward


def main(argv: list[str]) -> int:
    bootstrap, source, target, group = argv
    runner = BatchRunner(
        stage="bench-passthrough",
        bootstrap=bootstrap,
        group_id=group,
        source=source,
        handler=passthrough(target),
        metrics=Metrics(),
        deadletter_topic=f"{target}-deadletter",
    )
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    stopped.wait()
    runner.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
