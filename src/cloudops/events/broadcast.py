"""The broadcast interface and its implementation over the ``broadcaster`` library.

Our code talks to :class:`Broadcast`, never to broadcaster directly, so that its known
traps (unbounded queues, hanging after a lost connection) are handled in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlparse

from broadcaster import Broadcast as _Broadcaster
from broadcaster._base import Unsubscribed

if TYPE_CHECKING:
    # Imported where a Redis broadcast connects: the embedded default never needs it, and
    # redis-py costs a process about half a second to import.
    from redis import asyncio as redis
    from redis.asyncio.client import PubSub


class Listening(Protocol):
    """The texts arriving on the channels listened to, in arrival order, as one stream
    (one backend connection: whatever proves one channel alive proves them all).
    Channels can be added and removed while the stream is read."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def add(self, channel: str) -> None:
        """Listen to ``channel`` too. Returns once the backend delivers its messages to
        this stream: a message published after that is not missed. The stream must be
        being read meanwhile (the backend's answer arrives on it)."""

    async def remove(self, channel: str) -> None:
        """Stop listening to ``channel``: what is published on it after this returns does
        not arrive (what was published before may still be on the stream)."""


class Broadcast(Protocol):
    """Publish text on a channel; listen to channels as an async stream of texts.

    ``post`` queues a publish at once, in call order, and returns a future that says how
    it went: whoever only needs the message on its way (the journal, after a commit)
    need not wait for the backend. ``publish`` waits. ``disconnect`` first sends what is
    queued, for a moment."""

    name: str

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    def post(self, channel: str, message: str) -> asyncio.Future[None]: ...

    def may_be_heard(self, channel: str) -> bool:
        """False only when the backend knows that nothing listens on ``channel`` now, so a
        post there would be dropped: then the caller need not even write the message.
        Only an in-process backend can know; a shared one says True."""
        ...

    async def publish(self, channel: str, message: str) -> None: ...

    def listen(self, channel: str) -> contextlib.AbstractAsyncContextManager[Listening]: ...


#: Seconds ``disconnect`` gives the publishes still queued to go out.
DRAIN_TIMEOUT = 2.0

_Queued = tuple[str, str, "asyncio.Future[None]"]


class _Outbox:
    """Publishes queued in call order and sent by one task, a batch at a time: what was
    queued while a batch was on the wire goes out next, together."""

    def __init__(self) -> None:
        self._outbox: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None

    def post(self, channel: str, message: str) -> asyncio.Future[None]:
        sent = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, message, sent))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="broadcast-publish")
        return sent

    async def publish(self, channel: str, message: str) -> None:
        await self.post(channel, message)

    def may_be_heard(self, channel: str) -> bool:
        return True  # other processes' listeners are out of sight

    async def _send_batch(self, batch: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    async def _send(self) -> None:
        batch: list[_Queued] = []
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    await self._send_batch([(channel, message) for channel, message, _ in batch])
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        except asyncio.CancelledError:
            _settle(batch + self._outbox, ConnectionError("broadcast closed while publishing"))
            self._outbox = []
            raise
        finally:
            self._sender = None

    async def _drain(self) -> None:
        """Let what is queued go out (for a moment), then stop the sender."""
        sender = self._sender
        if sender is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await asyncio.shield(sender)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


#: Put on a stream by its backend going away: the stream ends there.
_ENDED = object()


class _QueuedStream:
    """A listening stream read from a queue that the backend's side fills."""

    def __init__(self) -> None:
        self._texts: asyncio.Queue[object] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            text = await self._texts.get()
            if text is _ENDED:
                return
            yield cast(str, text)


class MemoryBroadcast:
    """``memory://``, inside one process (the embedded default), written here rather than
    taken from broadcaster: its in-memory backend passes every message through a queue
    and a task of its own before the subscriber's queue, one more wait for a turn of a
    busy loop per event. Here a post is put on each listener's stream at once, in call
    order; the listener's reader is the only task in between."""

    name = "memory"

    def __init__(self) -> None:
        self._listeners: dict[str, set[_MemoryListening]] = {}

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        for listeners in list(self._listeners.values()):
            for listening in list(listeners):
                listening.end()
        self._listeners.clear()

    def post(self, channel: str, message: str) -> asyncio.Future[None]:
        for listening in self._listeners.get(channel, ()):
            listening.deliver(message)
        sent = asyncio.get_running_loop().create_future()
        sent.set_result(None)
        return sent

    async def publish(self, channel: str, message: str) -> None:
        await self.post(channel, message)

    def may_be_heard(self, channel: str) -> bool:
        return channel in self._listeners  # every listener is in this process

    def _attach(self, channel: str, listening: _MemoryListening) -> None:
        self._listeners.setdefault(channel, set()).add(listening)

    def _detach(self, channel: str, listening: _MemoryListening) -> None:
        listeners = self._listeners.get(channel)
        if listeners is not None:
            listeners.discard(listening)
            if not listeners:
                del self._listeners[channel]

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listening]:
        listening = _MemoryListening(self)
        await listening.add(channel)
        try:
            yield listening
        finally:
            listening.close()


class _MemoryListening(_QueuedStream):
    def __init__(self, broadcast: MemoryBroadcast) -> None:
        super().__init__()
        self._broadcast = broadcast
        self._channels: set[str] = set()

    def deliver(self, message: str) -> None:
        self._texts.put_nowait(message)

    def end(self) -> None:
        self._texts.put_nowait(_ENDED)

    async def add(self, channel: str) -> None:
        self._channels.add(channel)
        self._broadcast._attach(channel, self)

    async def remove(self, channel: str) -> None:
        self._channels.discard(channel)
        self._broadcast._detach(channel, self)

    def close(self) -> None:
        for channel in list(self._channels):
            self._broadcast._detach(channel, self)
        self._channels.clear()


class BroadcasterBroadcast(_Outbox):
    """``postgres://`` (LISTEN/NOTIFY) across processes, and any other backend broadcaster
    has; ``memory://`` works too (MemoryBroadcast is what that URL gets)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        scheme = urlparse(url).scheme.replace("rediss", "redis")
        self.name = "postgres" if scheme == "postgresql" else scheme
        self._broadcaster = _Broadcaster(url)

    async def connect(self) -> None:
        await self._broadcaster.connect()

    async def disconnect(self) -> None:
        await self._drain()
        await self._broadcaster.disconnect()

    async def _send_batch(self, batch: list[tuple[str, str]]) -> None:
        for channel, message in batch:
            await self._broadcaster.publish(channel=channel, message=message)

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listening]:
        listening = _BroadcasterListening(self._broadcaster)
        try:
            await listening.add(channel)
            yield listening
        finally:
            await listening.close()


class _BroadcasterListening(_QueuedStream):
    """broadcaster gives one subscriber per channel; each channel's messages are moved
    onto one queue (broadcaster's backends share one connection for all channels)."""

    def __init__(self, broadcaster: _Broadcaster) -> None:
        super().__init__()
        self._broadcaster = broadcaster
        self._channels: dict[str, tuple[contextlib.AsyncExitStack, asyncio.Task[None]]] = {}

    async def add(self, channel: str) -> None:
        if channel in self._channels:
            return
        stack = contextlib.AsyncExitStack()
        # broadcaster's subscribe returns once the backend listens (LISTEN has answered).
        subscriber = await stack.enter_async_context(self._broadcaster.subscribe(channel=channel))
        forward = asyncio.create_task(self._forward(subscriber), name=f"listen-{channel}")
        self._channels[channel] = (stack, forward)

    async def _forward(self, subscriber: Any) -> None:
        while True:
            try:
                event = await subscriber.get()
            except Unsubscribed:
                self._texts.put_nowait(_ENDED)
                return
            self._texts.put_nowait(event.message)

    async def remove(self, channel: str) -> None:
        entry = self._channels.pop(channel, None)
        if entry is None:
            return
        stack, forward = entry
        forward.cancel()
        await asyncio.wait({forward})  # not ``await forward``: our own cancel must go on
        await stack.aclose()

    async def close(self) -> None:
        for channel in list(self._channels):
            await self.remove(channel)


class _RedisListening:
    """One redis-py pub/sub connection. Redis answers a SUBSCRIBE or UNSUBSCRIBE on the
    stream itself, after any message sent before it: the reader hands the answer to the
    ``add`` or ``remove`` waiting for it."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub
        self._answers: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def add(self, channel: str) -> None:
        await self._answered("subscribe", channel)

    async def remove(self, channel: str) -> None:
        await self._answered("unsubscribe", channel)

    async def _answered(self, command: str, channel: str) -> None:
        key = (command, channel)
        answer = asyncio.get_running_loop().create_future()
        self._answers[key] = answer
        try:
            if command == "subscribe":
                await self._pubsub.subscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)
            await answer
        finally:
            if self._answers.get(key) is answer:
                del self._answers[key]

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                data = message["data"]
                yield data.decode() if isinstance(data, bytes) else str(data)
            elif kind in ("subscribe", "unsubscribe"):
                channel = message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                answer = self._answers.pop((kind, name), None)
                if answer is not None and not answer.done():
                    answer.set_result(None)


class RedisBroadcast(_Outbox):
    """``redis://`` on redis-py's asyncio pub/sub, written here rather than taken from
    broadcaster: broadcaster 0.3.1's Redis backend starts listening before its SUBSCRIBE
    completes, and with redis-py 8 its listener then waits forever and delivers nothing.
    A lost connection surfaces as an error from the stream, which the hub handles.
    Publishes queued while a batch is on the wire go out as one pipeline (one write and
    one read for all of them): a worker running many tasks otherwise pays a round trip
    per event."""

    name = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._client: redis.Redis | None = None

    async def connect(self) -> None:
        from redis import asyncio as redis

        self._client = redis.Redis.from_url(
            self._url, socket_connect_timeout=5, socket_timeout=None
        )
        await self._client.ping()

    async def disconnect(self) -> None:
        await self._drain()
        if self._client is not None:
            await self._client.aclose()

    async def _send_batch(self, batch: list[tuple[str, str]]) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("connect() first")
        if len(batch) == 1:
            await client.publish(*batch[0])
            return
        pipe = client.pipeline(transaction=False)
        for channel, message in batch:
            pipe.publish(channel, message)
        await pipe.execute()

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listening]:
        assert self._client is not None, "connect() first"
        pubsub = self._client.pubsub()
        # The first channel is not waited for: nothing reads the stream yet.
        await pubsub.subscribe(channel)
        try:
            yield _RedisListening(pubsub)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _settle(batch: list[tuple[str, str, asyncio.Future[None]]], error: Exception | None) -> None:
    """Tell each publisher still waiting how its publish went."""
    for _, _, sent in batch:
        if sent.done():  # its publisher stopped waiting (cancelled, timed out)
            continue
        if error is None:
            sent.set_result(None)
        else:
            sent.set_exception(error)


def create_broadcast(url: str) -> Broadcast:
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisBroadcast(url)
    if scheme == "memory":
        return MemoryBroadcast()
    return BroadcasterBroadcast(url)
