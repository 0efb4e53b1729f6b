"""Contract suite every :class:`~cloudops.events.broadcast.Broadcast` must pass.

One suite, run once per backend a user can configure as ``CLOUDOPS_BROADCAST_URL``:
``memory://`` (in-process, broadcaster), ``redis://`` (redis-py, our own) and
``postgresql://`` (LISTEN/NOTIFY, broadcaster). Each test publishes and listens through
one instance: the in-process backend has nothing to share with a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudops.events.broadcast import Broadcast, Listening, create_broadcast
from tests import pg
from tests.redis_server import RedisServer

IMPLEMENTATIONS = ["memory", "redis", "postgres"]


@pytest.fixture
def broadcast_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
    else:
        pg.require_postgres()
        yield pg.ADMIN_DSN


class Reader:
    """Reads a listening stream in the background, as the event hub does (``add`` is
    answered on the stream itself)."""

    def __init__(self, listening: Listening) -> None:
        self.listening = listening
        self.texts: asyncio.Queue[str] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(listening))

    async def _read(self, listening: Listening) -> None:
        async for text in listening:
            self.texts.put_nowait(text)

    async def next(self) -> str:
        async with asyncio.timeout(5):
            return await self.texts.get()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.wait({self._task})


@contextlib.asynccontextmanager
async def listening_on(url: str, channel: str) -> AsyncIterator[tuple[Broadcast, Reader]]:
    """A connected broadcast and a reader of its stream listening on ``channel``."""
    broadcast = create_broadcast(url)
    await broadcast.connect()
    try:
        async with broadcast.listen(channel) as listening:
            reader = Reader(listening)
            try:
                yield broadcast, reader
            finally:
                await reader.close()
    finally:
        await broadcast.disconnect()


def channels() -> tuple[str, str]:
    """Channel names of this test alone (the PostgreSQL and Redis servers are shared)."""
    tag = uuid.uuid4().hex[:12]
    return f"contract.base.{tag}", f"contract.added.{tag}"


pytestmark = pytest.mark.parametrize("broadcast_url", IMPLEMENTATIONS, indirect=True)


async def test_a_listener_receives_what_is_published_on_its_channel_in_order(
    broadcast_url: str,
) -> None:
    base, other = channels()
    async with listening_on(broadcast_url, base) as (broadcast, reader):
        # The first channel's subscription may still be on its way: wait for a message.
        async with asyncio.timeout(5):
            while reader.texts.empty():
                await broadcast.publish(base, "probe")
                await asyncio.sleep(0.05)
        for n in range(5):
            broadcast.post(other, f"elsewhere {n}")  # not listened to
            broadcast.post(base, f"m{n}")
        await broadcast.publish(base, "last")
        got: list[str] = []
        while len(got) < 6:
            if (text := await reader.next()) != "probe":
                got.append(text)
        assert got == [*(f"m{n}" for n in range(5)), "last"]


async def test_a_channel_added_while_listening_misses_nothing_published_after_add(
    broadcast_url: str,
) -> None:
    base, added = channels()
    async with listening_on(broadcast_url, base) as (broadcast, reader):
        await reader.listening.add(added)
        # No wait, no retry: add's return is the promise.
        await broadcast.publish(added, "first")
        assert await reader.next() == "first"


async def test_a_removed_channel_stops_arriving_and_can_be_added_again(
    broadcast_url: str,
) -> None:
    base, added = channels()
    async with listening_on(broadcast_url, base) as (broadcast, reader):
        await reader.listening.add(added)
        await reader.listening.remove(added)
        await broadcast.publish(added, "not for us")
        await broadcast.publish(base, "after")
        assert await reader.next() == "after"
        await reader.listening.add(added)
        await broadcast.publish(added, "again")
        assert await reader.next() == "again"


async def test_a_channel_listened_to_may_be_heard_and_only_memory_knows_when_not(
    broadcast_url: str,
) -> None:
    base, added = channels()
    async with listening_on(broadcast_url, base) as (broadcast, reader):
        assert broadcast.may_be_heard(base)
        await reader.listening.add(added)
        assert broadcast.may_be_heard(added)
        await reader.listening.remove(added)
        # In-process, every listener is in sight; a shared backend cannot tell.
        assert broadcast.may_be_heard(added) is (broadcast.name != "memory")
