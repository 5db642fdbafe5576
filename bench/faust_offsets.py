"""Faust's consumer with offset bookkeeping that never commits past an unprocessed record.

In bench/ since Faust left the product (docs/decisions/0001-stream-runtime.md): the Faust
passthrough rows run on it (`bench.faust_app`), and it records what running the stages on
faust-streaming took.

faust-streaming (0.15) lost records in the worker-kill tests (tests/reliability, several
SIGKILLs in quick succession: runs of 21 to 191 clinical records never processed while the
group's committed offsets moved past them). The causes, all around a rebalance:

- during a rebalance (table recovery) the fetch loop still reads the input partitions: while
  the streams' flow is stopped they skip those records, Faust seeks back to the committed
  offsets and resumes the flow, but what was read between that seek and the resume is never
  read again, and the loop's read offset, ahead of the seek, drops the re-read records below
  it; when the flow was not stopped (the worker's previous assignment was empty), the records
  are processed against tables not recovered yet;
- an offset jump seen by the fetch loop is recorded as a *gap* and counted as acknowledged
  (meant for compacted or transactional topics): committing over it skipped records that exist;
- a skipped record is acknowledged all the same, and the head check lets a commit start one
  offset past the committed one.

caremesh's stage inputs (clinical.fhir.v1, consent.events.v1) are plain append-only logs: their
offsets are consecutive, apart from records removed by retention before the log start. So this
consumer does not fetch input partitions during a rebalance (changelogs are still read for
table recovery), records no gaps, stops delivering a fetched batch once a seek happened,
ignores the read-offset write of a record delivered before a seek and the acknowledgements of
stale or skipped records, and commits only a run that starts exactly at the committed offset
(or at the log start when nothing was committed or retention removed the committed one). As a
last resort, when the head of a partition has been missing for `STALL_SECONDS` with nothing in
flight below it, it seeks back to the committed offset so the records are delivered again
(at-least-once: outputs carry stable `ce_id`s; such a re-read may reorder a patient's records,
and is logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any

from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.services import Service, WaitResults

log = logging.getLogger(__name__)

STALL_SECONDS = 15.0
"""How long the head of a partition's acknowledged offsets may wait for a record that is not in
flight before the partition is read again from its committed offset."""


class _ReadOffsets(dict[TP, int | None]):
    """Faust's per-partition read offsets (None when unknown), where the fetch loop's write for
    a record delivered before the latest seek is ignored."""

    def __init__(self, owner: CommitSafeConsumer) -> None:
        super().__init__()
        self._owner = owner

    def __missing__(self, tp: TP) -> None:
        return None

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        # written once per record: ignored for the record being delivered when a seek
        # happened since it was fetched
        owner = self._owner
        current = owner._delivering  # noqa: SLF001 - Faust's consumer internals
        if (
            current is not None
            and current[2] != owner._seeks  # noqa: SLF001 - Faust's consumer internals
            and current[0] == tp
            and current[1] == offset
        ):
            return
        dict.__setitem__(self, tp, offset)


class EventWait:
    """`event.wait()`, as an awaitable that tells which event it waits on."""

    __slots__ = ("event",)

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def __await__(self) -> Generator[Any, None, bool]:
        return asyncio.Event.wait(self.event).__await__()


class WaitableEvent(asyncio.Event):
    """An asyncio `Event` (Faust's `suspend_flow`) whose `wait()` is an `EventWait`."""

    def wait(self) -> EventWait:  # type: ignore[override]
        """Wait until the event is set."""
        return EventWait(self)


class EagerDelivery(Service):
    """mode's `Service.wait_first`, cheaper for the record deliveries of Faust's fetch loop.

    The loop hands each record to its streams with
    `wait_first(deliver(record), suspend_flow.wait())`. mode's `wait_first` makes four tasks
    (the two waits, the service's stopped and crashed events) and an `asyncio.wait` on every
    call, then cancels what did not finish: most of the CPU a record costs on its way to a
    stream. Here the delivery runs at once, and when it completes without suspending (the
    stream's buffer has room) its result is returned; the other waits are never started. A
    delivery that suspends (a full buffer) goes on, from where it stopped, in one task raced
    against the events: the same outcome as mode's, with one task and one future."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Wait for the first of `coros` to complete (see the class)."""
        first = coros[0] if coros else None
        if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = first.send(None)
        except StopIteration as done:
            _close_all(coros[1:])
            return WaitResults([first], [done.value], False)
        except BaseException:
            _close_all(coros[1:])
            raise
        rest = _finish(first, pending)
        if timeout is None and len(coros) == 2 and isinstance(coros[1], EventWait):
            return await self._race(first, rest, coros[1])
        return await super().wait_first(rest, *coros[1:], timeout=timeout)

    async def _race(
        self, first: Coroutine[Any, Any, Any], rest: Coroutine[Any, Any, Any], other: EventWait
    ) -> WaitResults:
        """Finish `rest` (the rest of `first`) in a task, or stop waiting for it when the
        other event, or the service's stopped or crashed event, is set first (the task is
        then cancelled, as mode's `wait_first` cancels what did not finish)."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(rest)
        wake: asyncio.Future[None] = loop.create_future()

        def on_done(_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        events = (other.event, self._stopped, self._crashed)
        task.add_done_callback(on_done)
        for event in events:
            event._waiters.append(wake)  # noqa: SLF001 - what set() resolves
        if any(event.is_set() for event in events):
            on_done(None)
        try:
            await wake
        finally:
            for event in events:
                event._waiters.remove(wake)  # noqa: SLF001 - Faust's consumer internals
            if not task.done():
                task.cancel()
        if self._stopped.is_set() or self._crashed.is_set():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a stopping service does not report it
            return WaitResults([], [], True)
        done: list[Any] = []
        results: list[Any] = []
        if task.done():
            results.append(task.result())  # the delivery's exception propagates, as in mode
            done.append(first)
        if other.event.is_set():
            done.append(other)
            results.append(True)
        return WaitResults(done, results, False)


class CommitSafeConsumer(EagerDelivery, faust_aiokafka.Consumer):
    """The aiokafka-driven Faust consumer with gapless, head-exact offset commits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.suspend_flow = WaitableEvent()
        self._stalled_since: dict[TP, float] = {}
        self._seeks = 0
        self._delivering: tuple[TP, int, int] | None = None
        self._read_offset = _ReadOffsets(self)
        self._reseeking: set[asyncio.Future[None]] = set()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """Faust's fetch, cut short when a seek happens while its batch is being delivered
        (the rest of the batch is fetched again from the sought position)."""
        seeks: int | None = None
        async for tp, message in super().getmany(timeout):
            if seeks is None:
                seeks = self._seeks  # no await between the fetch's return and its first record
            elif seeks != self._seeks:
                break
            self._delivering = (tp, message.offset, seeks)
            yield tp, message

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Fetch, leaving the input partitions unread during a rebalance (until the tables
        are recovered and the streams resumed). What they would fetch then is skipped by the
        streams while their flow is stopped, and once Faust's seek back to the committed
        offsets has happened, nothing fetches it again; and when the flow was not stopped (a
        worker whose previous assignment was empty), it is processed against tables not yet
        recovered (a care team not known yet: a resource not shared). Changelog partitions are
        still read (table recovery needs them)."""
        app = self.app
        if active_partitions is not None and (app.rebalancing or not app.flow_control.is_active()):
            acks_enabled_for = app.topics.acks_enabled_for
            active_partitions = {tp for tp in active_partitions if not acks_enabled_for(tp.topic)}
            if not active_partitions:
                await asyncio.sleep(min(timeout, 0.1))
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def seek(self, partition: TP, offset: int) -> None:
        """Seek one partition; its read offset is the sought one, whatever is in delivery."""
        self._seeks += 1
        await self._seek(partition, offset)
        offsets = self._read_offset
        assert isinstance(offsets, _ReadOffsets)
        dict.__setitem__(offsets, ensure_TP(partition), offset if offset else None)

    def ack(self, message: Any) -> bool:
        """Acknowledge a processed record; a record of an earlier generation, or one the stream
        skipped while flow was stopped by a rebalance, is not counted: it is read again after
        the rebalance's seek."""
        app = self.app
        if message.generation_id != app.consumer_generation_id or (
            not app.flow_control.is_active()
        ):
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
            return False
        return bool(super().ack(message))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Record no gap: an offset jump in an append-only input means records not delivered
        (yet), never records that do not exist."""
        return

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, then take the log start as the commit base of each
        input partition with no committed offset, or whose committed offset retention removed.

        Nothing is awaited after the seek: Faust resumes the streams right after it returns,
        and a record fetched in between would be skipped by them and not fetched again."""
        inputs = [tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic)]
        earliest = await self.earliest_offsets(*inputs) if inputs else {}
        self._seeks += 1
        await super().perform_seek()
        self._seeks += 1  # what was fetched during the seek is delivered again after it
        committed = self._committed_offset
        for tp in inputs:
            start = earliest.get(tp)
            current = committed.get(tp)
            if start is None or start < 0:
                continue
            if current is None or current < start:
                committed[tp] = start
        self._stalled_since.clear()

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: one past the run of acknowledged offsets that starts exactly
        at the committed one (None when there is no such run yet)."""
        acked = self._acked[tp]
        if not acked:
            self._stalled_since.pop(tp, None)
            return None
        base = self._committed_offset[tp]
        if base is None:
            return None  # not positioned yet (perform_seek sets the base)
        offset, used = head_run(acked, base)
        if used:
            self._acked_index[tp].difference_update(acked[:used])
            del acked[:used]
        if offset is None:
            if acked:
                self._watch_stall(tp, base, acked[0])
            return None
        self._stalled_since.pop(tp, None)
        return offset

    def _watch_stall(self, tp: TP, base: int, head: int) -> None:
        """Read the partition again from `base` when records below `head` have been missing for
        `STALL_SECONDS` and none of them is being processed."""
        if self.app.rebalancing:
            self._stalled_since.pop(tp, None)
            return
        in_flight = any(
            m.tp == tp and base <= m.offset < head and not m.acked
            for m in list(self._unacked_messages)
        )
        now = time.monotonic()
        if in_flight:
            self._stalled_since[tp] = now
            return
        since = self._stalled_since.setdefault(tp, now)
        if now - since < STALL_SECONDS:
            return
        self._stalled_since[tp] = now
        log.warning(
            "input %s[%d]: offsets %d to %d were not processed; reading them again",
            tp.topic,
            tp.partition,
            base,
            head - 1,
        )
        task = asyncio.ensure_future(self.seek(tp, base))
        self._reseeking.add(task)
        task.add_done_callback(self._reseeking.discard)


def _close_all(coros: tuple[Any, ...]) -> None:
    """Close the coroutines among `coros` that were never started."""
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Drive `coro`, which was stepped once by hand and yielded `pending` (what it waits
    on), to its end: what it yields goes to the task running this, and what the task sends
    or throws back (a result, a cancellation) goes to `coro`."""
    while True:
        try:
            value = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = coro.send(value)
            except StopIteration as done:
                return done.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    """A coroutine that finishes `coro` after its first step (see `_resume`)."""
    return await _resume(coro, pending)


def head_run(acked: list[int], base: int) -> tuple[int | None, int]:
    """Sort `acked` in place; return the offset to commit (one past the run of consecutive
    offsets starting exactly at `base`, or None) and how many leading entries are used up
    (the run, and any offsets below `base`, which are committed already)."""
    acked.sort()
    below = 0
    while below < len(acked) and acked[below] < base:
        below += 1
    if below == len(acked) or acked[below] != base:
        return None, below
    end = below + 1
    while end < len(acked) and acked[end] == acked[end - 1] + 1:
        end += 1
    return acked[end - 1] + 1, end
