"""Fan-out of task events to in-process subscribers, fed by a broadcast backend.

The process subscribes to the backend once and fans out locally, so N subscribers cost
one deserialization per event and no database query. Each subscriber has a bounded
buffer: one that falls behind is ended with :class:`SubscriberOverflow` (it resumes with
``afterSequence``) and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from cloudops.events.broadcast import Broadcast
from cloudops.events.records import EventRecord

log = logging.getLogger(__name__)

CHANNEL = "cloudops.task_events"


class SubscriptionEnded(Exception):
    """The stream of a subscriber was ended by the hub, not by the subscriber."""

    code = "SUBSCRIPTION_ENDED"


class SubscriberOverflow(SubscriptionEnded):
    """The subscriber did not keep up; resume with afterSequence."""

    code = "SUBSCRIBER_OVERFLOW"


class BroadcastLost(SubscriptionEnded):
    """The broadcast backend went away; resume with afterSequence once it is back."""

    code = "BROADCAST_LOST"


EventFilter = Callable[[EventRecord], bool]


@dataclass(eq=False)
class Subscription:
    matches: EventFilter
    buffer_size: int
    queue: asyncio.Queue[EventRecord | SubscriptionEnded] = field(init=False)
    ended: bool = False

    def __post_init__(self) -> None:
        # One slot is kept for the end marker, so ending never blocks.
        self.queue = asyncio.Queue(maxsize=self.buffer_size + 1)

    def offer(self, event: EventRecord) -> None:
        if self.ended or not self.matches(event):
            return
        if self.queue.qsize() >= self.buffer_size:
            self.end(
                SubscriberOverflow(
                    f"subscriber fell more than {self.buffer_size} events behind; "
                    "resubscribe with afterSequence to resume"
                )
            )
            return
        self.queue.put_nowait(event)

    def end(self, reason: SubscriptionEnded) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(reason)

    async def __aiter__(self) -> AsyncIterator[EventRecord]:
        while True:
            item = await self.queue.get()
            if isinstance(item, SubscriptionEnded):
                raise item
            yield item


class EventHub:
    def __init__(self, broadcast: Broadcast, *, buffer_size: int = 1000) -> None:
        self._broadcast = broadcast
        self._buffer_size = buffer_size
        self._subscriptions: set[Subscription] = set()
        self._pump: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def backend_name(self) -> str:
        return self._broadcast.name

    async def start(self) -> None:
        await self._broadcast.connect()
        self._pump = asyncio.create_task(self._run(), name="event-hub-pump")
        await self._ready.wait()

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for sub in list(self._subscriptions):
            sub.end(SubscriptionEnded("server shutting down"))
        await self._broadcast.disconnect()

    async def publish(self, event: EventRecord) -> None:
        await self._broadcast.publish(CHANNEL, event.to_json())

    @contextlib.asynccontextmanager
    async def subscribe(self, matches: EventFilter) -> AsyncIterator[Subscription]:
        sub = Subscription(matches, self._buffer_size)
        self._subscriptions.add(sub)
        try:
            yield sub
        finally:
            self._subscriptions.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    async def _run(self) -> None:
        async with self._broadcast.listen(CHANNEL) as messages:
            self._ready.set()
            async for text in messages:
                try:
                    event = EventRecord.from_json(text)
                except (ValueError, KeyError, TypeError):
                    log.warning(
                        "dropped malformed broadcast message", extra={"action": "bad_event"}
                    )
                    continue
                for sub in list(self._subscriptions):
                    sub.offer(event)
