"""The event hub's own liveness check must not mistake a busy stream for a lost one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from cloudops.events.broadcast import BroadcasterBroadcast
from cloudops.events.hub import EventHub
from tests.integration.test_redis_broadcast import event

HEARTBEAT = 0.05
BURST = 150
#: Per message: the burst takes BURST * READ_DELAY = 0.75 s to read, far more than the
#: three heartbeat intervals (0.15 s) the hub waits for an echo.
READ_DELAY = 0.005


class SlowReader(BroadcasterBroadcast):
    """The in-process broadcast, read as slowly as a loop busy with many subscribers reads."""

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        async with super().listen(channel) as texts:

            async def slow() -> AsyncIterator[str]:
                async for text in texts:
                    await asyncio.sleep(READ_DELAY)
                    yield text

            yield slow()


async def test_a_backlog_delaying_the_heartbeat_echo_is_not_a_lost_broadcast() -> None:
    hub = EventHub(lambda: SlowReader("memory://"), heartbeat_interval=HEARTBEAT)
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
    hub = EventHub(lambda: BroadcasterBroadcast("memory://"), heartbeat_interval=HEARTBEAT)
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
