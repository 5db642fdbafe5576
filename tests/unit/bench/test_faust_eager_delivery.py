"""Faust's fetch loop hands each record to its streams with
`wait_first(deliver(record), suspend_flow.wait())`; `EagerDelivery.wait_first` must give the
outcome mode's `wait_first` gives, without its four tasks per record when the delivery needs
no wait (`bench.faust_offsets`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bench.faust_offsets import EagerDelivery, EventWait, WaitableEvent


class Fetcher(EagerDelivery):
    """A mode service with the consumer's `wait_first`."""


async def _full_queue() -> asyncio.Queue[int]:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    return queue


def test_a_delivery_with_room_runs_in_the_fetch_loop_task_and_returns_its_result() -> None:
    async def main() -> None:
        fetcher, flow = Fetcher(), WaitableEvent()
        loop_task = asyncio.current_task()
        ran_in: list[Any] = []

        async def deliver() -> str:
            ran_in.append(asyncio.current_task())
            return "delivered"

        result = await fetcher.wait_first(deliver(), flow.wait())
        assert result.results == ["delivered"]
        assert result.stopped is False
        assert ran_in == [loop_task]  # no task was made for it
        assert not flow._waiters

    asyncio.run(main())


def test_a_delivery_waiting_for_room_completes_when_the_stream_takes_an_event() -> None:
    async def main() -> None:
        fetcher, flow = Fetcher(), WaitableEvent()
        queue = await _full_queue()

        async def deliver() -> str:
            await queue.put(1)
            return "delivered"

        asyncio.get_running_loop().call_later(0.02, queue.get_nowait)
        result = await fetcher.wait_first(deliver(), flow.wait())
        assert result.results == ["delivered"]
        assert result.stopped is False
        assert queue.get_nowait() == 1
        assert not flow._waiters
        assert not fetcher._stopped._waiters

    asyncio.run(main())


def test_suspending_the_flow_ends_the_wait_and_cancels_the_delivery() -> None:
    async def main() -> None:
        fetcher, flow = Fetcher(), WaitableEvent()
        queue = await _full_queue()
        cancelled: list[bool] = []

        async def deliver() -> str:
            try:
                await queue.put(1)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return "delivered"

        waited = flow.wait()
        asyncio.get_running_loop().call_later(0.02, flow.set)
        result = await fetcher.wait_first(deliver(), waited)
        assert result.done == [waited]
        assert result.results == [True]
        assert result.stopped is False
        await asyncio.sleep(0)  # the cancellation reaches the delivery
        assert cancelled == [True]
        assert queue.qsize() == 1
        assert queue.get_nowait() == 0
        assert not flow._waiters

    asyncio.run(main())


def test_a_stopping_service_ends_the_wait_as_stopped() -> None:
    async def main() -> None:
        fetcher, flow = Fetcher(), WaitableEvent()
        queue = await _full_queue()
        asyncio.get_running_loop().call_later(0.02, fetcher._stopped.set)
        result = await fetcher.wait_first(queue.put(1), flow.wait())
        assert result.stopped is True
        assert result.done == []
        await asyncio.sleep(0)
        assert queue.qsize() == 1

    asyncio.run(main())


def test_a_delivery_error_propagates_whether_or_not_it_waited() -> None:
    async def main() -> None:
        fetcher, flow = Fetcher(), WaitableEvent()

        async def fails_at_once() -> None:
            raise ValueError("bad record")

        async def fails_later() -> None:
            await asyncio.sleep(0.01)
            raise KeyError("bad record")

        other = asyncio.sleep(10)
        with pytest.raises(ValueError):
            await fetcher.wait_first(fails_at_once(), other)
        assert other.cr_frame is None  # closed, never started: no "never awaited" warning
        with pytest.raises(KeyError):
            await fetcher.wait_first(fails_later(), flow.wait())
        assert not flow._waiters

    asyncio.run(main())


def test_cancelling_the_fetch_loop_cancels_a_waiting_delivery() -> None:
    async def main() -> None:
        fetcher, flow = Fetcher(), WaitableEvent()
        queue = await _full_queue()
        cancelled: list[bool] = []

        async def deliver() -> None:
            try:
                await queue.put(1)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        waiting = asyncio.create_task(fetcher.wait_first(deliver(), flow.wait()))
        await asyncio.sleep(0.02)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)
        assert cancelled == [True]
        assert not flow._waiters

    asyncio.run(main())


def test_other_waits_get_modes_wait_first() -> None:
    async def main() -> None:
        fetcher = Fetcher()
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, event.set)
        # not a coroutine first: mode's wait_first, unchanged
        result = await fetcher.wait_first(asyncio.ensure_future(event.wait()))
        assert result.results == [True]

        async def slow() -> str:
            await asyncio.sleep(0.01)
            return "slow"

        # a timeout: the rest of the delivery goes through mode's wait_first
        result = await fetcher.wait_first(slow(), asyncio.sleep(5), timeout=2)
        assert result.results == ["slow"]

    asyncio.run(main())


def test_the_flow_event_still_waits_and_reports_like_an_asyncio_event() -> None:
    async def main() -> None:
        flow = WaitableEvent()
        waited = flow.wait()
        assert isinstance(waited, EventWait)
        assert waited.event is flow
        asyncio.get_running_loop().call_later(0.01, flow.set)
        assert await waited is True
        assert await flow.wait() is True  # already set
        flow.clear()
        assert not flow.is_set()

    asyncio.run(main())
