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
    """Publish text on a channel; listen to a channel as an async stream of texts."""

    name: str

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def publish(self, channel: str, message: str) -> None: ...

    def listen(
        self, channel: str
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[str]]: ...


class BroadcasterBroadcast:
    """``memory://`` inside one process; ``redis://`` or ``postgres://`` across processes."""

    def __init__(self, url: str) -> None:
        self.name = urlparse(url).scheme.replace("rediss", "redis")
        if self.name == "postgresql":
            self.name = "postgres"
        self._broadcaster = _Broadcaster(url)

    async def connect(self) -> None:
        await self._broadcaster.connect()

    async def disconnect(self) -> None:
        await self._broadcaster.disconnect()

    async def publish(self, channel: str, message: str) -> None:
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


class RedisBroadcast:
    """``redis://`` on redis-py's asyncio pub/sub, written here rather than taken from
    broadcaster: broadcaster 0.3.1's Redis backend starts listening before its SUBSCRIBE
    completes, and with redis-py 8 its listener then waits forever and delivers nothing.
    A lost connection surfaces as an error from the stream, which the hub handles."""

    name = "redis"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.Redis | None = None
        #: Publishes waiting for the one being sent: they go out next, together.
        self._outbox: list[tuple[str, str, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._client = redis.Redis.from_url(
            self._url, socket_connect_timeout=5, socket_timeout=None
        )
        await self._client.ping()

    async def disconnect(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._client is not None:
            await self._client.aclose()

    async def publish(self, channel: str, message: str) -> None:
        """Publishes made while another is on the wire are sent after it as one pipeline
        (one write and one read for all of them, in the order they were made): a worker
        running many tasks otherwise pays a round trip per event."""
        assert self._client is not None, "connect() first"
        sent = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, message, sent))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(self._client), name="redis-publish")
        await sent

    async def _send(self, client: redis.Redis) -> None:
        batch: list[tuple[str, str, asyncio.Future[None]]] = []
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    if len(batch) == 1:
                        await client.publish(batch[0][0], batch[0][1])
                    else:
                        pipe = client.pipeline(transaction=False)
                        for channel, message, _ in batch:
                            pipe.publish(channel, message)
                        await pipe.execute()
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
