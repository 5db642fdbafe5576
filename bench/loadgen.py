"""The latency bench's background load: HTTP ingest of Observations at a steady rate, in a process
of its own, so that the probes' client does not queue behind it in one event loop (which adds
the load generator's own delays to every measured latency).

    python -m bench.loadgen BASE_URL RATE TOKEN

runs until terminated. aiohttp, not httpx: it costs a fraction of the CPU per request, and the
load generator shares the machine with the pipeline it measures.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import UTC, datetime

import aiohttp
import orjson

INS = "urn:oid:1.2.250.1.213.1.4.8"
SENDERS = 8


def observation(patient: str, n: int, kg: float, when: datetime) -> bytes:
    """A body weight Observation of `patient` (synthetic)."""
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "id": f"w-{patient}-{n}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"identifier": {"system": INS, "value": patient}},
            "effectiveDateTime": when.isoformat(),
            "valueQuantity": {
                "value": kg,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            },
        }
    )


async def run(base: str, rate: float, token: str, stop: asyncio.Event) -> int:
    """Post weights of patients who are on no pathway (load without alerts) at `rate` per
    second from `SENDERS` concurrent senders until `stop`; returns how many were refused."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    now = datetime.now(UTC)
    refused = 0
    connector = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:

        async def sender(k: int) -> None:
            nonlocal refused
            n, period = k, SENDERS / rate
            due = time.monotonic()
            while not stop.is_set():
                n += SENDERS
                body = observation(f"29901758{n % 5000:05d}", n, 70.0, now)
                async with session.post("/fhir/Observation", data=body) as response:
                    await response.read()
                    refused += response.status != 202
                due += period
                await asyncio.sleep(max(0.0, due - time.monotonic()))

        await asyncio.gather(*(sender(k) for k in range(SENDERS)))
    return refused


def main() -> None:
    base, rate, token = sys.argv[1], float(sys.argv[2]), sys.argv[3]

    async def until_terminated() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await run(base, rate, token, stop)

    refused = asyncio.run(until_terminated())
    if refused:
        print(f"loadgen: {refused} requests refused", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
