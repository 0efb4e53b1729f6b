"""The broadcast interface and its implementation over the ``broadcaster`` library.

Our code talks to :class:`Broadcast`, never to broadcaster directly, so that its known
traps (unbounded queues, hanging after a lost connection) are handled in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlparse

from broadcaster import Broadcast as _Broadcaster
from broadcaster._base import Unsubscribed
from redis import asyncio as redis


class Broadcast(Protocol):
    """Publish text on a channel; listen to a channel as an async stream of texts.

    ``post`` queues a publish at once, in call order, and returns a future that says how
    it went: whoever only needs the message on its way (the journal, after a commit)
    need not wait for the backend. ``publish`` waits. ``disconnect`` first sends what is
    queued, for a moment."""

    name: str

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    def post(self, channel: str, message: str) -> asyncio.Future[None]: ...

    async def publish(self, channel: str, message: str) -> None: ...

    def listen(
        self, channel: str
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[str]]: ...


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


class BroadcasterBroadcast(_Outbox):
    """``memory://`` inside one process; ``redis://`` or ``postgres://`` across processes."""

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
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        async with self._broadcaster.subscribe(channel=channel) as subscriber:

            async def texts() -> AsyncIterator[str]:
                while True:
                    try:
                        event = await subscriber.get()
                    except Unsubscribed:
                        return
                    yield event.message

            yield texts()


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
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        assert self._client is not None, "connect() first"
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)

        async def texts() -> AsyncIterator[str]:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)

        try:
            yield texts()
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
    if urlparse(url).scheme in ("redis", "rediss"):
        return RedisBroadcast(url)
    return BroadcasterBroadcast(url)
