"""The demo's feeder: sends the territory's events to the running services, paced, with retries.

`Feeder.run(events)` dispatches events in order, no earlier than their `due` offset (when
`follow_schedule`) and no faster than `rate` events per second, to `concurrency` workers. An
event goes to the worker chosen by its patient, so one patient's events keep their order across
channels (consent before data, admission before discharge). Each worker owns one MLLP
connection and shares one `httpx.AsyncClient`; it retries what may succeed later (503,
connection errors, MLLP AE 207) with exponential backoff, up to `max_attempts`.

`Feeder.counters` can be read at any time (sent, accepted, rejected, retried, failed and answer
codes per channel) for a live summary. Cancelling `run` stops the dispatcher and the workers and
closes every connection. Log lines carry counts and codes only, never a payload or identifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import httpx

from caremesh.demo.clients import ConsentClient, IngestClient, MllpClient, SendResult
from caremesh.demo.scenario import CHANNELS, Channel, Event

log = logging.getLogger(__name__)

_STOP: Final = None


@dataclass(frozen=True)
class FeedTargets:
    """Where the services listen, and the tokens to present."""

    ingest_url: str
    """Base URL of the FHIR ingest API (`{ingest_url}/fhir`)."""
    consent_url: str
    """Base URL of the consent API (`{consent_url}/Consent`)."""
    mllp_host: str
    mllp_port: int
    tokens: Mapping[str, str] = field(repr=False)
    """Source id → bearer token (`Territory.source_tokens()`)."""
    admin_token: str = field(repr=False)
    """Bearer token of the consent API's administrator (`Territory.admin_token`)."""


@dataclass(frozen=True)
class FeedOptions:
    """Pacing, concurrency and retries."""

    rate: float | None = 50.0
    """Events per second, real time, over all channels; None: as fast as the services take."""
    follow_schedule: bool = True
    """Wait for each event's `due` offset (the simulated clock); False: only `rate` paces."""
    concurrency: int = 8
    """Workers (each with one MLLP connection) and so the bound on requests in flight."""
    max_attempts: int = 8
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    timeout_seconds: float = 10.0
    queue_size: int = 32
    """Events waiting per worker; a full queue holds the dispatcher back."""


@dataclass
class ChannelCounts:
    """Counters of one channel. `sent` counts events, `retried` the extra attempts."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    """Events given up after `max_attempts` retryable answers."""
    codes: dict[str, int] = field(default_factory=dict)
    """Final answer codes: `202`, `422`, `AA`, `AR`, `connect-error`..."""

    @property
    def in_flight(self) -> int:
        """Events sent and not yet settled."""
        return self.sent - self.accepted - self.rejected - self.failed


class FeedCounters:
    """Counters per channel, updated by the workers and readable at any time."""

    def __init__(self) -> None:
        self._by_channel = {channel: ChannelCounts() for channel in CHANNELS}
        self.dispatched = 0
        self.lag_seconds = 0.0
        """How far the dispatcher is behind the simulated schedule (rate limit, backpressure)."""

    def channel(self, channel: Channel) -> ChannelCounts:
        """The live counters of one channel (mutated by the workers)."""
        return self._by_channel[channel]

    def snapshot(self) -> dict[Channel, ChannelCounts]:
        """A copy of every channel's counters."""
        return {ch: replace(c, codes=dict(c.codes)) for ch, c in self._by_channel.items()}

    def total(self) -> ChannelCounts:
        """The sum over channels (codes merged)."""
        out = ChannelCounts()
        for counts in self._by_channel.values():
            out.sent += counts.sent
            out.accepted += counts.accepted
            out.rejected += counts.rejected
            out.retried += counts.retried
            out.failed += counts.failed
            for code, n in counts.codes.items():
                out.codes[code] = out.codes.get(code, 0) + n
        return out


class _Worker:
    """Sends its queue's events one after the other, retrying what may succeed later."""

    def __init__(
        self,
        ingest: IngestClient,
        consent: ConsentClient,
        mllp: MllpClient,
        options: FeedOptions,
        counters: FeedCounters,
    ) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(options.queue_size)
        self._ingest = ingest
        self._consent = consent
        self._mllp = mllp
        self._options = options
        self._counters = counters

    async def run(self) -> None:
        while (event := await self.queue.get()) is not _STOP:
            await self._deliver(event)

    async def _attempt(self, event: Event) -> SendResult:
        if event.channel == "mllp":
            return await self._mllp.send(event.payload)
        if event.channel == "consent":
            return await self._consent.send(event)
        return await self._ingest.send(event)

    async def _deliver(self, event: Event) -> None:
        counts = self._counters.channel(event.channel)
        counts.sent += 1
        opts = self._options
        for attempt in range(opts.max_attempts):
            result = await self._attempt(event)
            if result.outcome != "retry":
                break
            if attempt + 1 == opts.max_attempts:
                counts.failed += 1
                _count_code(counts, result.code)
                log.warning("feed gave up: channel=%s code=%s", event.channel, result.code)
                return
            counts.retried += 1
            delay = min(opts.max_backoff_seconds, opts.backoff_seconds * 2**attempt)
            if result.retry_after is not None:
                delay = min(opts.max_backoff_seconds, max(delay, result.retry_after))
            log.debug("feed retry: channel=%s code=%s in %.2fs", event.channel, result.code, delay)
            await asyncio.sleep(delay)
        if result.outcome == "accepted":
            counts.accepted += 1
        else:
            counts.rejected += 1
        _count_code(counts, result.code)

    async def close(self) -> None:
        await self._mllp.close()


def _count_code(counts: ChannelCounts, code: str) -> None:
    counts.codes[code] = counts.codes.get(code, 0) + 1


def shard(event: Event, workers: int) -> int:
    """The worker of an event: by patient, so that one patient's events stay in order."""
    key = event.patient or event.idempotency_key
    return zlib.crc32(key.encode("utf-8")) % workers


class Feeder:
    """Runs the HTTP, consent and MLLP senders concurrently over one stream of events."""

    def __init__(
        self,
        targets: FeedTargets,
        options: FeedOptions | None = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.targets = targets
        self.options = options or FeedOptions()
        if self.options.concurrency < 1 or self.options.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if self.options.rate is not None and self.options.rate <= 0:
            raise ValueError("rate must be positive or None")
        self.counters = FeedCounters()
        self._http = http

    async def run(self, events: Iterable[Event]) -> FeedCounters:
        """Send every event (or until cancelled); the counters when the last one settled."""
        opts, targets = self.options, self.targets
        async with contextlib.AsyncExitStack() as stack:
            http = self._http
            if http is None:
                limits = httpx.Limits(max_connections=opts.concurrency * 2)
                client = httpx.AsyncClient(timeout=opts.timeout_seconds, limits=limits)
                http = await stack.enter_async_context(client)
            ingest = IngestClient(http, targets.ingest_url, targets.tokens)
            consent = ConsentClient(http, targets.consent_url, targets.admin_token)
            workers = [
                _Worker(
                    ingest,
                    consent,
                    MllpClient(targets.mllp_host, targets.mllp_port, timeout=opts.timeout_seconds),
                    opts,
                    self.counters,
                )
                for _ in range(opts.concurrency)
            ]
            for worker in workers:
                stack.push_async_callback(worker.close)
            log.info("feed started: workers=%d rate=%s", opts.concurrency, opts.rate)
            try:
                async with asyncio.TaskGroup() as group:
                    for worker in workers:
                        group.create_task(worker.run())
                    await self._dispatch(events, workers)
                    for worker in workers:
                        await worker.queue.put(_STOP)
            finally:
                total = self.counters.total()
                log.info(
                    "feed stopped: sent=%d accepted=%d rejected=%d retried=%d failed=%d",
                    total.sent,
                    total.accepted,
                    total.rejected,
                    total.retried,
                    total.failed,
                )
        return self.counters

    async def _dispatch(self, events: Iterable[Event], workers: list[_Worker]) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        next_slot = began
        interval = 1.0 / self.options.rate if self.options.rate else 0.0
        for event in events:
            wake = began + event.due if self.options.follow_schedule else began
            wake = max(wake, next_slot)
            delay = wake - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            next_slot = max(next_slot, now - interval) + interval
            if self.options.follow_schedule:
                self.counters.lag_seconds = max(0.0, now - (began + event.due))
            await workers[shard(event, len(workers))].queue.put(event)
            self.counters.dispatched += 1
