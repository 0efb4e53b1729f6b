"""The event hub: its liveness check must not mistake a busy stream for a lost one, and a
subscription delivered directly (no queue) keeps the queue's guarantees."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloudops.events.broadcast import Listening, MemoryBroadcast
from cloudops.events.hub import (
    FAILED_DELIVERY,
    EventHub,
    SubscriberOverflow,
    SubscriptionEnded,
)
from cloudops.events.records import EventRecord
from tests.integration.test_redis_broadcast import event

HEARTBEAT = 0.05
BURST = 150
#: Per message: the burst takes BURST * READ_DELAY = 0.75 s to read, far more than the
#: three heartbeat intervals (0.15 s) the hub waits for an echo.
READ_DELAY = 0.005


class SlowReader(MemoryBroadcast):
    """The in-process broadcast, read as slowly as a loop busy with many subscribers reads."""

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listening]:
        async with super().listen(channel) as listening:
            yield SlowListening(listening)


class SlowListening:
    def __init__(self, inner: Listening) -> None:
        self._inner = inner

    async def add(self, channel: str) -> None:
        await self._inner.add(channel)

    async def remove(self, channel: str) -> None:
        await self._inner.remove(channel)

    async def __aiter__(self) -> AsyncIterator[str]:
        async for text in self._inner:
            await asyncio.sleep(READ_DELAY)
            yield text


async def test_a_backlog_delaying_the_heartbeat_echo_is_not_a_lost_broadcast() -> None:
    hub = EventHub(lambda: SlowReader(), heartbeat_interval=HEARTBEAT)
    await hub.start()
    try:
        async with hub.subscribe(lambda e: e.task_id == "t1") as sub:
            for sequence in range(1, BURST + 1):
                await hub.publish(event(sequence))
            received: list[int] = []
            async with asyncio.timeout(BURST * READ_DELAY * 10):
                async for got in sub:  # raises BroadcastLost if the hub gave up
                    received.append(got.sequence)
                    if len(received) == BURST:
                        break
        assert received == list(range(1, BURST + 1))
        assert hub.connected
    finally:
        await hub.stop()


async def test_a_loop_blocked_longer_than_the_heartbeat_timeout_is_not_a_lost_broadcast() -> None:
    # A loop busy serving 1,000 subscribers can run one iteration for seconds: the hub's
    # heartbeat wakes up late, and so does everything else. Being late is not being lost.
    hub = EventHub(lambda: MemoryBroadcast(), heartbeat_interval=HEARTBEAT)
    await hub.start()
    try:
        async with hub.subscribe(lambda e: e.task_id == "t1") as sub:
            for sequence in range(1, 6):
                time.sleep(5 * HEARTBEAT)  # noqa: ASYNC251 - the point: the whole loop stalls
                await asyncio.sleep(0)
                await hub.publish(event(sequence))
            received: list[int] = []
            async with asyncio.timeout(5):
                async for got in sub:  # raises BroadcastLost if the hub gave up
                    received.append(got.sequence)
                    if len(received) == 5:
                        break
        assert received == [1, 2, 3, 4, 5]
        assert hub.connected
    finally:
        await hub.stop()


# -- direct delivery --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_hub(**options: Any) -> AsyncIterator[EventHub]:
    """A real hub over the in-process broadcast, stopped at the end."""
    hub = EventHub(lambda: MemoryBroadcast(), **options)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def published(hub: EventHub, sequences: range) -> None:
    """Post them together (as a journal's write does), then let the hub's reader take
    every message."""
    await asyncio.gather(*[hub.post(event(sequence)) for sequence in sequences])
    for _ in range(20):
        await asyncio.sleep(0)


async def test_direct_delivery_hands_over_every_event_in_order_and_the_end_still_comes() -> None:
    got: list[int] = []

    def outlet(records: list[EventRecord]) -> int:
        got.extend(record.sequence for record in records)
        return 0  # the receiver keeps up

    async with (
        running_hub(buffer_size=5) as hub,
        hub.subscribe(lambda e: e.sequence % 2 == 1) as sub,
    ):
        assert sub.deliver_directly(outlet)
        await published(hub, range(1, 21))  # four times the buffer: nothing queued
        assert got == list(range(1, 21, 2)), "matching events only, in order, at once"
        assert sub.queue.empty()
        await hub.stop()
        with pytest.raises(SubscriptionEnded, match="resubscribe with afterSequence"):
            async with asyncio.timeout(5):
                async for _ in sub:
                    raise AssertionError("a direct subscription yields nothing itself")


async def test_events_that_arrive_together_are_handed_over_together() -> None:
    """A burst is one call per subscriber, so a socket gets it in one write."""
    calls: list[list[int]] = []

    def outlet(records: list[EventRecord]) -> int:
        calls.append([record.sequence for record in records])
        return 0

    async with running_hub() as hub:
        async with hub.subscribe(lambda e: e.sequence != 3) as sub:
            assert sub.deliver_directly(outlet)
            await published(hub, range(1, 6))  # posted together: one batch
            await published(hub, range(6, 7))
        assert calls == [[1, 2, 4, 5], [6]]


async def test_direct_receiver_too_far_behind_is_ended_with_overflow() -> None:
    got: list[int] = []

    def outlet(records: list[EventRecord]) -> int:
        got.extend(record.sequence for record in records)
        return len(got)  # nothing taken by the peer: every frame still waits here

    async with running_hub(buffer_size=3) as hub, hub.subscribe(lambda e: True) as sub:
        assert sub.deliver_directly(outlet)
        await published(hub, range(1, 11))
        assert len(got) >= 4 and got == list(range(1, len(got) + 1)), got
        with pytest.raises(SubscriberOverflow, match="fell more than 3 events behind"):
            async with asyncio.timeout(5):
                async for _ in sub:
                    pass
        handed_over = len(got)
        await published(hub, range(11, 15))
        assert len(got) == handed_over, "nothing is handed over once it ended"


async def test_a_failing_outlet_ends_its_subscription_only() -> None:
    def broken(records: list[EventRecord]) -> int:
        raise RuntimeError("socket exploded")

    async with (
        running_hub() as hub,
        hub.subscribe(lambda e: True) as bad,
        hub.subscribe(lambda e: True) as good,
    ):
        assert bad.deliver_directly(broken)
        await published(hub, range(1, 4))
        with pytest.raises(SubscriptionEnded, match=re.escape(FAILED_DELIVERY)):
            async with asyncio.timeout(5):
                async for _ in bad:
                    pass
        seen = [good.queue.get_nowait() for _ in range(3)]
        assert [e.sequence for e in seen if isinstance(e, EventRecord)] == [1, 2, 3]
        assert hub.connected, "one outlet's failure must not stop the fan-out"


async def test_only_a_subscription_with_nothing_queued_switches() -> None:
    async with running_hub() as hub, hub.subscribe(lambda e: True) as sub:
        await published(hub, range(1, 2))
        assert not sub.deliver_directly(lambda records: 0), "a queued event would be overtaken"
        queued = sub.queue.get_nowait()
        assert isinstance(queued, EventRecord) and queued.sequence == 1


async def test_with_nobody_watching_in_process_a_write_is_not_even_serialized() -> None:
    """On the embedded default a write's events are posted only while a subscriber of
    this process watches; before and after, nothing is made or sent, and nothing that
    anybody could have received is lost."""
    async with running_hub() as hub:
        assert hub.post_all([event(1), event(2)]) == []
        async with hub.subscribe(lambda e: True) as sub:
            posted = hub.post_all([event(3), event(4)])
            assert len(posted) == 1, "one message for the write"
            await asyncio.gather(*posted)
            async with asyncio.timeout(5):
                assert [(await sub.queue.get()).sequence for _ in range(2)] == [3, 4]
        # The hub stops watching after its last subscriber, then again posts nothing.
        for _ in range(500):
            if not hub.post_all([event(5)]):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the hub still posts 5 s after its last subscriber left")


@pytest.mark.parametrize(("budget", "consecutive"), [(3600.0, True), (0.0, False)])
async def test_a_fan_out_round_gives_the_loop_a_turn_once_its_time_is_up(
    monkeypatch: pytest.MonkeyPatch, budget: float, consecutive: bool
) -> None:
    """Within its time budget a round hands an event to every subscriber without a
    break; past it, the rest of the process gets a turn between subscribers."""
    monkeypatch.setattr("cloudops.events.hub.FAN_OUT_BUDGET", budget)
    marks: list[str] = []

    def outlet_of(name: str) -> Any:
        def outlet(records: list[EventRecord]) -> int:
            marks.append(name)
            return 0

        return outlet

    async def ticker() -> None:
        while True:
            marks.append("tick")
            await asyncio.sleep(0)

    async with running_hub() as hub, contextlib.AsyncExitStack() as stack:
        for number in range(4):
            sub = await stack.enter_async_context(hub.subscribe(lambda e: True))
            assert sub.deliver_directly(outlet_of(f"sub{number}"))
        ticking = asyncio.create_task(ticker())
        try:
            await published(hub, [1])
            for _ in range(20):
                await asyncio.sleep(0)
        finally:
            ticking.cancel()
    handed = [i for i, mark in enumerate(marks) if mark.startswith("sub")]
    assert len(handed) == 4
    assert (handed == list(range(handed[0], handed[0] + 4))) is consecutive, marks
