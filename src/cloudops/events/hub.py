"""Fan-out of task events to in-process subscribers, fed by a broadcast backend.

The process subscribes to the backend once, while it has subscribers, and fans out
locally, so N subscribers cost one deserialization per event and no database query (and
a process nobody watches receives no events at all). Events that arrived together are
handed out together, a slice of subscribers at a time so the rest of the process keeps
its turns. A subscriber either has a queue, read by its own task, or a direct delivery
(the live feed's sockets, graphql/live_outlet.py) that the hub calls itself. Either way
it has a bounded buffer: one that falls behind is ended with :class:`SubscriberOverflow`
(it resumes with ``afterSequence``) and nobody else waits for it.

The backend connection is supervised. broadcaster hangs a subscriber forever after its
Redis or PostgreSQL connection drops (encode/broadcaster#144), so the hub sends itself a
heartbeat through the backend; when one does not come back in time, every subscriber is
ended with :class:`BroadcastLost` (they resume with ``afterSequence``) and the hub
reconnects with backoff. Publishing while disconnected fails fast; the database still has
every event, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from cloudops.events.broadcast import Broadcast, Listening
from cloudops.events.records import EventRecord, events_from_json, joined_json

log = logging.getLogger(__name__)

CHANNEL = "cloudops.task_events"
HEARTBEAT_PREFIX = "hb:"
#: Characters of one broadcast message at most (JSON is ASCII here): PostgreSQL's NOTIFY
#: takes under 8,000 bytes, and a message that size is still one read for Redis.
MESSAGE_LIMIT = 7000
#: How long the hub hands events to subscribers before it lets the loop run something
#: else (requests, the in-process worker). A time, not a count of subscribers: each turn
#: given away also lets the worker make more events, which wait for the round to end, so
#: yielding after every 50 of 1,000 subscribers made rounds long (p99 delivery 411-472
#: ms on 2 vCPUs); after 20 ms, 262-294 ms; after 50 ms, 235-241 ms, about what no yield
#: at all gives (211-232 ms). The loop then stalls for 50 ms at most, whatever the
#: number of subscribers.
FAN_OUT_BUDGET = 0.05


class SubscriptionEnded(Exception):
    """The stream of a subscriber was ended by the hub, not by the subscriber."""

    code = "SUBSCRIPTION_ENDED"


class SubscriberOverflow(SubscriptionEnded):
    """The subscriber did not keep up; resume with afterSequence."""

    code = "SUBSCRIBER_OVERFLOW"


class BroadcastLost(SubscriptionEnded):
    """The broadcast backend went away; resume with afterSequence once it is back."""

    code = "BROADCAST_LOST"


class BroadcastUnavailable(Exception):
    """Publishing is not possible right now (the backend is disconnected)."""


FAILED_DELIVERY = "an event could not be delivered (the server log has why)"

EventFilter = Callable[[EventRecord], bool]

DirectDelivery = Callable[[list[EventRecord]], int]
"""Hands events (in order) to their receiver at once and says how many of the
subscriber's events are still waiting in this process (not yet taken by the kernel)."""


@dataclass(eq=False)
class Subscription:
    matches: EventFilter
    buffer_size: int
    queue: asyncio.Queue[EventRecord | SubscriptionEnded] = field(init=False)
    ended: bool = False
    _deliver: DirectDelivery | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # One slot is kept for the end marker, so ending never blocks.
        self.queue = asyncio.Queue(maxsize=self.buffer_size + 1)

    def offer(self, events: list[EventRecord]) -> None:
        """Take the matching ones of events that arrived together, in order."""
        if self.ended:
            return
        matching = [event for event in events if self.matches(event)]
        if not matching:
            return
        if self._deliver is not None:
            try:
                waiting = self._deliver(matching)
            except Exception:  # one receiver's failure must not stop the fan-out
                log.exception("direct delivery failed", extra={"action": "delivery_failed"})
                self.end(SubscriptionEnded(f"{FAILED_DELIVERY}; resubscribe with afterSequence"))
                return
            if waiting > self.buffer_size:
                self.end(self._overflow())
            return
        for event in matching:
            if self.queue.qsize() >= self.buffer_size:
                self.end(self._overflow())
                return
            self.queue.put_nowait(event)

    def deliver_directly(self, deliver: DirectDelivery) -> bool:
        """From now on hand each matching event to ``deliver`` as it is offered: no queue
        and no task to wake per subscriber, which is most of what a thousand subscribers
        cost. The end still comes through the queue, so whoever iterates the subscription
        learns why it ended as before. Only a subscription with nothing queued switches
        (False otherwise): queued events must not be overtaken."""
        if self.ended or not self.queue.empty():
            return False
        self._deliver = deliver
        return True

    @property
    def direct(self) -> bool:
        return self._deliver is not None

    def _overflow(self) -> SubscriberOverflow:
        return SubscriberOverflow(
            f"subscriber fell more than {self.buffer_size} events behind; "
            "resubscribe with afterSequence to resume"
        )

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
    def __init__(
        self,
        broadcast_factory: Callable[[], Broadcast],
        *,
        buffer_size: int = 1000,
        heartbeat_interval: float = 1.0,
        connect_timeout: float = 5.0,
        serves_subscribers: bool = True,
    ) -> None:
        self._factory = broadcast_factory
        # A process that never serves subscribers (``cloudops worker``) only publishes.
        self.serves_subscribers = serves_subscribers
        # Every hub listens on a channel of its own, for its heartbeats, and on the shared
        # one only while it has subscribers: a process nobody watches (a worker, an API
        # process with no dashboard open) does not receive every event of every process
        # just to drop it.
        self._listen_channel = f"{CHANNEL}.liveness.{uuid.uuid4().hex}"
        self._watching = False  # listening on the shared channel now
        self._watch_changed = asyncio.Event()  # subscribers came or went
        self._news = asyncio.Event()  # replaced each time it is set (see _announce)
        self._buffer_size = buffer_size
        self._heartbeat_interval = heartbeat_interval
        self._connect_timeout = connect_timeout
        self._subscriptions: set[Subscription] = set()
        self._current: Broadcast | None = None
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.backend_name = broadcast_factory().name

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Until the backend is connected (for callers that need live events now)."""
        await self._connected.wait()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    @property
    def direct_subscriber_count(self) -> int:
        """Subscribers whose events the hub hands over itself (no queue, no task)."""
        return sum(1 for sub in self._subscriptions if sub.direct)

    async def start(self) -> None:
        """Connect; if the backend is down, start anyway and keep trying in the background
        (tasks run without it, subscribers catch up from the database)."""
        self._supervisor = asyncio.create_task(self._supervise(), name="event-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout)
        if not self.connected:
            log.warning(
                "broadcast backend not reachable yet; retrying in the background",
                extra={"action": "broadcast_down", "backend": self.backend_name},
            )

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._end_all(SubscriptionEnded("server shutting down; resubscribe with afterSequence"))

    async def publish(self, event: EventRecord) -> None:
        await self._publish_text(event.to_json())

    def post(self, event: EventRecord) -> asyncio.Future[None]:
        """Queue the event for the backend now, after those posted before it, without
        waiting for the backend: the future says how it went. Raises
        :class:`BroadcastUnavailable` at once while disconnected."""
        return self._post_text(event.to_json())

    def post_all(self, events: list[EventRecord]) -> list[asyncio.Future[None]]:
        """``post`` for events that go out together (a write's): as few messages as fit
        under MESSAGE_LIMIT (one PUBLISH, one read for every subscribing process, not
        one per event); a future per message. None at all where the backend knows that
        nobody listens (on the embedded default while no subscriber is watching: then
        not even the JSON is made)."""
        broadcast = self._current
        if broadcast is not None and self.connected and not broadcast.may_be_heard(CHANNEL):
            return []
        messages: list[list[str]] = []
        size = 0
        for text in (event.to_json() for event in events):
            if messages and size + len(text) + 1 <= MESSAGE_LIMIT:
                messages[-1].append(text)
                size += len(text) + 1
            else:
                messages.append([text])
                size = len(text) + 2
        return [self._post_text(joined_json(texts)) for texts in messages]

    def _post_text(self, text: str, channel: str = CHANNEL) -> asyncio.Future[None]:
        broadcast = self._current
        if broadcast is None or not self.connected:
            raise BroadcastUnavailable(f"{self.backend_name} broadcast is disconnected")
        return broadcast.post(channel, text)

    async def _publish_text(self, text: str, channel: str = CHANNEL) -> None:
        sent = self._post_text(text, channel)
        async with asyncio.timeout(max(self._heartbeat_interval, 1.0) * 2):
            await sent

    @contextlib.asynccontextmanager
    async def subscribe(self, matches: EventFilter) -> AsyncIterator[Subscription]:
        if not self.serves_subscribers:
            raise RuntimeError("this event hub only publishes (serves_subscribers=False)")
        sub = Subscription(matches, self._buffer_size)
        if not self.connected:
            # Handed out already ended: a replay from the database still works, and the
            # live part tells the client to come back.
            sub.end(
                BroadcastLost(
                    f"{self.backend_name} broadcast is disconnected; "
                    "resubscribe with afterSequence in a moment"
                )
            )
        self._subscriptions.add(sub)
        try:
            if not sub.ended:
                # Live from here on: an event published after this returns reaches it.
                self._watch_changed.set()
                while not (self._watching or sub.ended):
                    await self._news.wait()
            yield sub
        finally:
            self._subscriptions.discard(sub)
            if not self._subscriptions:
                self._watch_changed.set()

    def _announce(self) -> None:
        """Wake every subscriber waiting for the shared channel (or for its end)."""
        self._news.set()
        self._news = asyncio.Event()

    # -- supervision ------------------------------------------------------------------------
    async def _supervise(self) -> None:
        backoff = 0.2
        while True:
            broadcast = self._factory()
            listening: contextlib.AbstractAsyncContextManager[Listening] | None = None
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await broadcast.connect()
                    listening = broadcast.listen(self._listen_channel)
                    messages = await listening.__aenter__()
                self._current = broadcast
                self._connected.set()
                log.info(
                    "broadcast connected",
                    extra={"action": "broadcast_connected", "backend": self.backend_name},
                )
                backoff = 0.2
                await self._pump(messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "broadcast connection lost: %s",
                    exc or type(exc).__name__,
                    extra={"action": "broadcast_lost", "backend": self.backend_name},
                )
            finally:
                was_connected = self.connected
                self._connected.clear()
                self._current = None
                self._watching = False
                if was_connected:
                    self._end_all(
                        BroadcastLost(
                            f"{self.backend_name} broadcast connection lost; resubscribe "
                            "with afterSequence to resume"
                        )
                    )
                if listening is not None:
                    await self._quietly(listening.__aexit__(None, None, None))
                await self._quietly(broadcast.disconnect())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _pump(self, messages: Listening) -> None:
        """Fan out until the backend stops answering our own heartbeats."""
        token = f"{HEARTBEAT_PREFIX}{uuid.uuid4().hex}"
        # Heartbeats sent since the stream last delivered anything. Counted in beats, not
        # seconds: a loop busy with many subscribers runs late, beats and reader alike, and
        # being late is not being lost (each beat yields, so the reader can answer first).
        unanswered = 0

        # What arrived while the previous events were being handed out: handed out
        # together, so a direct subscriber gets them in one write (one system call per
        # socket for a burst, not one per event).
        arrived: list[EventRecord] = []
        arriving = asyncio.Event()

        async def read() -> None:
            nonlocal unanswered
            async for text in messages:
                # Anything arriving proves the stream alive, not only our own echo, which
                # under a burst waits behind the backlog.
                unanswered = 0
                if text.startswith(HEARTBEAT_PREFIX) or not self._subscriptions:
                    continue  # a process nobody watches (a worker) need not decode events
                try:
                    arrived.extend(events_from_json(text))
                except (ValueError, KeyError, TypeError):
                    log.warning(
                        "dropped a malformed broadcast message", extra={"action": "bad_event"}
                    )
                    continue
                arriving.set()
            raise ConnectionError("broadcast stream ended")

        async def fan_out() -> None:
            while True:
                await arriving.wait()
                arriving.clear()
                events = arrived.copy()
                arrived.clear()
                until = time.monotonic() + FAN_OUT_BUDGET
                for sub in list(self._subscriptions):
                    sub.offer(events)
                    if time.monotonic() > until:
                        await asyncio.sleep(0)  # the rest of the process has a turn
                        until = time.monotonic() + FAN_OUT_BUDGET

        async def beat() -> None:
            nonlocal unanswered
            while True:
                await asyncio.sleep(self._heartbeat_interval)
                if unanswered >= 3:
                    raise ConnectionError("heartbeat not echoed by the broadcast backend")
                await self._publish_text(token, self._listen_channel)
                unanswered += 1

        async def watch() -> None:
            """The shared channel while there are subscribers, and only then."""
            self._watch_changed.set()  # a new connection starts without it
            while True:
                await self._watch_changed.wait()
                self._watch_changed.clear()
                wanted = any(not sub.ended for sub in self._subscriptions)
                if wanted and not self._watching:
                    await messages.add(CHANNEL)
                    self._watching = True
                    self._announce()
                elif not wanted and self._watching:
                    self._watching = False  # before the await: a newcomer waits for add
                    await messages.remove(CHANNEL)

        tasks = {asyncio.create_task(work()) for work in (read, fan_out, beat, watch)}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # re-raise why it ended
        finally:
            for running in tasks:
                running.cancel()
            await asyncio.wait(tasks)

    def _end_all(self, reason: SubscriptionEnded) -> None:
        for sub in list(self._subscriptions):
            sub.end(reason)
        self._announce()

    @staticmethod
    async def _quietly(awaitable: object) -> None:
        """Tear down a connection that may be dead without hanging on it."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await awaitable  # type: ignore[misc]
