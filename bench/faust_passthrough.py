"""A Faust worker whose only agent forwards raw records (framework overhead baseline).

Run as `python -m bench.faust_passthrough IN OUT` with the usual CAREMESH_* environment.
"""

from __future__ import annotations

import sys

from faust import Worker

from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.streams.app import create_app


def main() -> int:
    source, target = sys.argv[1], sys.argv[2]
    settings = Settings()
    app = create_app(settings, Metrics())
    src = app.topic(
        source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    dst = app.topic(
        target, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(src, name="passthrough")
    async def passthrough(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await dst.send(key=event.key, value=event.value, headers=event.headers)

    Worker(app, loglevel="WARNING", override_logging=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
