"""A Faust worker whose only agent forwards raw records (framework overhead baseline).

Run as `python -m bench.faust_passthrough IN OUT` with the usual CAREMESH_* environment.
`BENCH_FAUST_VARIANT` (JSON) picks the variant: `{"conf": {faust setting: value},
"mode": "events" | "take", "take": [n, within seconds], "send": "topic" | "producer",
"concurrency": k}`.

- `"mode": "events"` handles one event per iteration; `"take"` takes up to n events (or what
  came within the given seconds) and sends them together.
- `"send": "topic"` sends with `Topic.send` (Faust's per-message publish path, with its
  callbacks and sensors); `"producer"` with the app's producer, `app.producer.send`.

`take` acknowledges a batch's events (so their offsets may be committed) when the next batch
is asked for, after the `gather` of its sends' acknowledgements; `events` hands each record to
the producer and goes on, as a Faust agent usually does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import faust
from faust import Worker

from bench.faust_app import create_app
from caremesh.metrics import Metrics
from caremesh.settings import Settings


class RawBytes(faust.Schema):  # type: ignore[type-arg]
    """Keys and values handed through as the bytes they are, without Faust's codec registry."""

    def loads_key(self, app: Any, message: Any, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **_: Any) -> Any:
        return message.value

    def dumps_key(self, app: Any, key: Any, *, headers: Any, **_: Any) -> Any:
        return key, headers

    def dumps_value(self, app: Any, value: Any, *, headers: Any, **_: Any) -> Any:
        return value, headers


def main() -> int:
    source, target = sys.argv[1], sys.argv[2]
    variant: dict[str, Any] = json.loads(os.environ.get("BENCH_FAUST_VARIANT") or "{}")
    settings = Settings()
    app = create_app(settings, Metrics())
    for name, value in variant.get("conf", {}).items():
        setattr(app.conf, name, value)
    src = app.topic(source, schema=RawBytes())
    dst = app.topic(target, schema=RawBytes())
    size, within = variant.get("take", [500, 0.05])
    by_producer = variant.get("send", "topic") == "producer"

    async def send(event: Any) -> Any:
        """Send the event's record to `target`; returns the acknowledgement's future."""
        if by_producer:
            return await app.producer.send(
                target, event.key, event.value, None, None, event.headers
            )
        return await dst.send(key=event.key, value=event.value, headers=event.headers)

    if variant.get("mode") == "take":

        @app.agent(src, name="passthrough", concurrency=variant.get("concurrency", 1))
        async def passthrough_take(stream: Any) -> None:
            async for events in stream.take_events(size, within=within):
                pending = [await send(e) for e in events]
                await asyncio.gather(*pending)  # acknowledged before the batch is acked

    else:

        @app.agent(src, name="passthrough", concurrency=variant.get("concurrency", 1))
        async def passthrough(stream: Any) -> None:
            async for event in stream.events():
                await send(event)

    Worker(app, loglevel="WARNING", override_logging=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
