"""Redis fan-out between processes, and what happens when Redis goes away and comes back.

Each test runs its own redis-server, so it can be killed without touching anything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis import asyncio as redis

from cloudops.domain import EventKind, TaskStatus, TaskType
from cloudops.events.broadcast import create_broadcast
from cloudops.events.hub import (
    CHANNEL,
    MESSAGE_LIMIT,
    BroadcastLost,
    BroadcastUnavailable,
    EventHub,
    Subscription,
)
from cloudops.events.records import EventRecord
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def event(sequence: int) -> EventRecord:
    return EventRecord(
        "e",
        "t1",
        sequence,
        EventKind.LOG,
        datetime.now(UTC),
        TaskStatus.RUNNING,
        0.5,
        "k8s:a/b",
        TaskType.RESTART_WORKLOAD,
        None,
        None,
        "hello",
        None,
    )


def hub_on(url: str) -> EventHub:
    return EventHub(lambda: create_broadcast(url), heartbeat_interval=0.2, connect_timeout=2)


async def sequences(sub: Subscription, count: int) -> list[int]:
    """The sequences of the next ``count`` events the subscription gets."""
    received: list[int] = []
    async with asyncio.timeout(10):
        async for got in sub:
            received.append(got.sequence)
            if len(received) == count:
                break
    return received


async def reconnected(hub: EventHub) -> None:
    async with asyncio.timeout(15):
        await hub.wait_connected()


async def test_an_event_published_in_one_process_reaches_another(redis_server: RedisServer) -> None:
    publisher, listener = hub_on(redis_server.url), hub_on(redis_server.url)
    await publisher.start()
    await listener.start()
    try:
        assert publisher.backend_name == "redis" and listener.connected
        async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
            await publisher.publish(event(1))
            async with asyncio.timeout(5):
                received = await anext(aiter(sub))
        assert received == event(1) or received.sequence == 1
    finally:
        await publisher.stop()
        await listener.stop()


async def test_a_publish_only_hub_reaches_subscribers_and_stays_connected(
    redis_server: RedisServer,
) -> None:
    """``cloudops worker`` publishes but never serves subscribers: its hub checks the
    connection on a channel of its own instead of receiving every event, and still
    notices when Redis goes away."""
    publisher = EventHub(
        lambda: create_broadcast(redis_server.url),
        heartbeat_interval=0.2,
        connect_timeout=2,
        serves_subscribers=False,
    )
    listener = hub_on(redis_server.url)
    await publisher.start()
    await listener.start()
    try:
        with pytest.raises(RuntimeError, match="only publishes"):
            async with publisher.subscribe(lambda e: True):
                pass
        async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
            for n in range(1, 6):
                await publisher.publish(event(n))
                await asyncio.sleep(0.3)  # across heartbeats: its own are answered
            received = []
            async with asyncio.timeout(5):
                async for got in sub:
                    received.append(got.sequence)
                    if len(received) == 5:
                        break
        assert received == [1, 2, 3, 4, 5] and publisher.connected
        redis_server.stop()
        async with asyncio.timeout(10):
            while publisher.connected:  # noqa: ASYNC110 (the hub has no "lost" event to wait on)
                await asyncio.sleep(0.05)
    finally:
        await publisher.stop()
        await listener.stop()


async def test_concurrent_publishes_all_arrive_in_the_order_they_were_made(
    redis_server: RedisServer,
) -> None:
    """Publishes made while one is on the wire go out together in one pipeline; every
    one still arrives, in the order the publishers made them."""
    publisher, listener = hub_on(redis_server.url), hub_on(redis_server.url)
    await publisher.start()
    await listener.start()
    try:
        async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
            await asyncio.gather(*(publisher.publish(event(n)) for n in range(1, 301)))
            received = await sequences(sub, 300)
        assert received == list(range(1, 301))
    finally:
        await publisher.stop()
        await listener.stop()


async def test_publishes_waiting_when_redis_dies_fail_instead_of_hanging(
    redis_server: RedisServer,
) -> None:
    broadcast = create_broadcast(redis_server.url)
    await broadcast.connect()
    try:
        await broadcast.publish("c", "before")
        redis_server.stop()  # SIGKILL
        async with asyncio.timeout(10):
            results = await asyncio.gather(
                *(broadcast.publish("c", f"m{n}") for n in range(20)), return_exceptions=True
            )
        assert results and all(isinstance(r, Exception) for r in results), results
    finally:
        await broadcast.disconnect()


async def test_redis_down_ends_subscribers_fast_and_the_hub_comes_back(
    redis_server: RedisServer,
) -> None:
    hub = hub_on(redis_server.url)
    await hub.start()
    try:
        async with hub.subscribe(lambda e: True) as sub:
            redis_server.stop()
            # The subscriber is told within a few heartbeats instead of hanging forever.
            async with asyncio.timeout(10):
                with pytest.raises(BroadcastLost):
                    async for _ in sub:
                        pass
        assert not hub.connected
        with pytest.raises(BroadcastUnavailable):
            await hub.publish(event(2))
        async with hub.subscribe(lambda e: True) as early:
            assert early.ended, "a subscription opened while disconnected must say so"
        redis_server.start()
        await reconnected(hub)
        async with hub.subscribe(lambda e: e.sequence == 3) as sub:
            await hub.publish(event(3))
            async with asyncio.timeout(5):
                assert (await anext(aiter(sub))).sequence == 3
    finally:
        await hub.stop()


async def test_the_hub_starts_while_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # not started yet
    hub = hub_on(server.url)
    await hub.start()
    try:
        assert not hub.connected
        server.start()
        await reconnected(hub)
    finally:
        await hub.stop()
        server.stop()


@pytest.mark.parametrize("runtime_factory", ["sqlite"], indirect=True)
async def test_a_submission_does_not_wait_for_redis_and_its_event_still_arrives(
    redis_server: RedisServer,
    runtime_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis holds every PUBLISH for a minute (CLIENT PAUSE WRITE). A mutation's write is
    committed and its QUEUED event queued for the broadcast: the mutation returns at once
    instead of waiting for Redis (it used to wait until the publish timed out, 2
    heartbeats, and then the event was given up). Once Redis answers again, the event
    reaches another process's subscriber, and nothing was logged as failed."""
    runtime: Runtime = await runtime_factory(
        run_worker=False, broadcast_url=redis_server.url, broadcast_heartbeat=30.0
    )
    listener = EventHub(lambda: create_broadcast(redis_server.url), heartbeat_interval=30.0)
    await listener.start()
    admin = redis.Redis.from_url(redis_server.url)
    try:
        async with listener.subscribe(lambda e: e.kind == EventKind.QUEUED) as sub:
            await admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
            try:
                result = await asyncio.wait_for(
                    runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web")), 20
                )
            finally:
                await admin.execute_command("CLIENT", "UNPAUSE")
            assert result.value is not None, result.user_errors
            async with asyncio.timeout(10):
                got = await anext(aiter(sub))
        assert got.task_id == result.value.id
        assert "broadcast_failed" not in [getattr(r, "action", None) for r in caplog.records]
    finally:
        await admin.aclose()
        await listener.stop()


async def test_events_posted_just_before_a_stop_still_go_out(redis_server: RedisServer) -> None:
    """A worker's last events are posted, not awaited, and then the process stops: the
    stop sends what is queued before it disconnects."""
    publisher, listener = hub_on(redis_server.url), hub_on(redis_server.url)
    await publisher.start()
    await listener.start()
    try:
        async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
            posted = [publisher.post(event(n)) for n in range(1, 201)]
            await publisher.stop()
            assert all(sent.done() and sent.exception() is None for sent in posted)
            received = await sequences(sub, 200)
        assert received == list(range(1, 201))
    finally:
        await publisher.stop()
        await listener.stop()


async def shared_channel_listeners(admin: redis.Redis) -> int:
    """How many connections Redis has subscribed to the hubs' shared event channel."""
    [(_, count)] = await admin.pubsub_numsub(CHANNEL)
    return int(count)


async def test_a_hub_listens_to_every_event_only_while_it_has_subscribers(
    redis_server: RedisServer,
) -> None:
    """A process nobody watches (an API process with no dashboard open) does not receive
    every event of every process just to drop it: its hub is on the shared channel only
    from its first subscriber to its last. A subscriber is live when ``subscribe``
    returns: an event published by another process right after it arrives."""
    publisher, listener = hub_on(redis_server.url), hub_on(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    await publisher.start()
    await listener.start()
    try:
        assert await shared_channel_listeners(admin) == 0
        for round_ in range(3):
            async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
                assert await shared_channel_listeners(admin) == 1
                await publisher.publish(event(round_ + 1))  # no wait before it
                assert await sequences(sub, 1) == [round_ + 1]
                async with listener.subscribe(lambda e: True) as second:
                    await publisher.publish(event(10))
                    assert await sequences(second, 1) == [10]
                assert await shared_channel_listeners(admin) == 1  # the first is still here
            async with asyncio.timeout(5):
                while await shared_channel_listeners(admin):  # noqa: ASYNC110 (Redis's count)
                    await asyncio.sleep(0.01)
        # Gone and back at once: the newcomer waits for the channel, not for the departure.
        async with listener.subscribe(lambda e: True):
            pass
        async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
            await publisher.publish(event(7))
            assert await sequences(sub, 1) == [7]
        assert listener.connected and publisher.connected
    finally:
        await admin.aclose()
        await publisher.stop()
        await listener.stop()


async def test_adding_a_channel_returns_only_once_redis_answered_on_the_stream(
    redis_server: RedisServer,
) -> None:
    """Sending SUBSCRIBE is not being subscribed: a PUBLISH from another connection can be
    handled before it. ``add`` waits for Redis's answer, which comes on the stream."""
    broadcast = create_broadcast(redis_server.url)
    await broadcast.connect()
    try:
        async with broadcast.listen("contract.base") as listening:
            adding = asyncio.create_task(listening.add("contract.added"))
            await asyncio.sleep(0.3)
            assert not adding.done()  # nobody read the answer yet
            texts = aiter(listening)
            reading = asyncio.create_task(anext(texts))
            async with asyncio.timeout(5):
                await adding
            await broadcast.publish("contract.added", "hello")
            async with asyncio.timeout(5):
                assert await reading == "hello"
    finally:
        await broadcast.disconnect()


async def test_a_writes_events_go_out_as_few_messages_and_arrive_one_by_one_in_order(
    redis_server: RedisServer,
) -> None:
    """Events posted together (a write's) are one PUBLISH while they fit in a message:
    one command for Redis and one read for every subscribing process, not one per event.
    A burst bigger than a message is split, each part under the limit; subscribers get
    every event, in order, as before."""
    publisher, listener = hub_on(redis_server.url), hub_on(redis_server.url)
    raw = redis.Redis.from_url(redis_server.url)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    await publisher.start()
    await listener.start()

    async def messages() -> list[str]:
        texts = []
        async with asyncio.timeout(5):
            while (got := await pubsub.get_message(timeout=0.3)) is not None or not texts:
                if got is not None:
                    texts.append(got["data"].decode())
        return texts

    try:
        async with listener.subscribe(lambda e: e.task_id == "t1") as sub:
            await asyncio.gather(*publisher.post_all([event(n) for n in (1, 2, 3)]))
            assert len(await messages()) == 1
            assert await sequences(sub, 3) == [1, 2, 3]
            burst = [event(n) for n in range(4, 4 + 100)]  # ~40 KB of JSON
            await asyncio.gather(*publisher.post_all(burst))
            texts = await messages()
            assert 1 < len(texts) < 100 and all(len(text) <= MESSAGE_LIMIT for text in texts)
            assert await sequences(sub, 100) == list(range(4, 104))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await raw.aclose()
        await publisher.stop()
        await listener.stop()
