"""The broadcast interface and its implementation over the ``broadcaster`` library.

Our code talks to :class:`Broadcast`, never to broadcaster directly, so that its known
traps (unbounded queues, hanging after a lost connection) are handled in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlparse

from broadcaster import Broadcast as _Broadcaster
from broadcaster._base import Unsubscribed


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


def create_broadcast(url: str) -> Broadcast:
    return BroadcasterBroadcast(url)
