"""Subscription.taskEvents over WebSocket (gql client, real server): replay-then-live,
completion, filters, fan-out, and what happens to a subscriber that falls behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from cloudops.db.models import Task
from cloudops.domain import EventKind, TaskStatus, TaskType
from cloudops.events.broadcast import create_broadcast
from cloudops.events.hub import EventHub, SubscriberOverflow
from cloudops.events.hub import Subscription as HubSubscription
from cloudops.events.records import EventRecord
from cloudops.graphql import shared_events
from cloudops.graphql.replay import stored_events
from cloudops.services import inputs
from tests.api.conftest import LiveServer, op, project_and_environment
from tests.conftest import events_of, wait_final

Event = dict[str, Any]
Row = tuple[int, str, str, float]
ServerFactory = Callable[..., Any]

FINAL_KINDS = {"COMPLETED", "FAILED", "CANCELLED"}
OVERFLOW_HINT = "resubscribe with afterSequence"

TASK_EVENTS = gql("""
subscription($taskId: ID, $entityId: String, $projectId: ID, $after: Int) {
  taskEvents(taskId: $taskId, entityId: $entityId, projectId: $projectId,
             afterSequence: $after) {
    taskId sequence kind status progress entityId
  }
}""")

# ---------------------------------------------------------------------------- helpers


async def deploy(live: LiveServer, env_id: str, version: str = "1") -> str:
    result = await live.runtime.tasks.deploy(inputs.Deploy(env_id, version))
    assert result.value is not None, result.user_errors
    return result.value.id


async def second_environment(live: LiveServer, project_id: str, name: str) -> str:
    result = await live.runtime.projects.create_environment(
        inputs.CreateEnvironment(project_id, name, "PROD")
    )
    assert result.value is not None, result.user_errors
    return result.value.id


async def stored(live: LiveServer, task_id: str) -> list[Row]:
    return [
        (e.sequence, e.kind, e.status, e.progress) for e in await events_of(live.runtime, task_id)
    ]


def rows(events: list[Event]) -> list[Row]:
    return [(e["sequence"], e["kind"], e["status"], e["progress"]) for e in events]


def of_task(events: list[Event], task_id: str) -> list[Event]:
    return [e for e in events if e["taskId"] == task_id]


async def subscribe_all(client: Client, request: GraphQLRequest) -> list[Event]:
    """Every item of a subscription until the server completes it."""
    seen: list[Event] = []
    async with client as session:
        async for item in session.subscribe(request):
            seen.append(item["taskEvents"])
    return seen


async def collect(live: LiveServer, timeout: float = 20, **variables: Any) -> list[Event]:
    async with asyncio.timeout(timeout):
        return await subscribe_all(live.ws_client(), op(TASK_EVENTS, **variables))


async def collect_until(
    live: LiveServer, stop: Callable[[list[Event]], bool], **variables: Any
) -> list[Event]:
    """Items of a subscription until ``stop(seen)`` is true; then the client completes it."""
    seen: list[Event] = []
    async with live.ws_client() as session:
        stream = session.subscribe(op(TASK_EVENTS, **variables))
        async with contextlib.aclosing(stream):
            async for item in stream:
                seen.append(item["taskEvents"])
                if stop(seen):
                    break
    return seen


def events_of_sub(sub: HubSubscription) -> contextlib.aclosing[AsyncGenerator[EventRecord, None]]:
    """Iterate a hub subscription and close the iterator however the loop is left."""
    return contextlib.aclosing(cast(AsyncGenerator[EventRecord, None], aiter(sub)))


def finals_seen(task_ids: list[str]) -> Callable[[list[Event]], bool]:
    def stop(seen: list[Event]) -> bool:
        done = {e["taskId"] for e in seen if e["kind"] in FINAL_KINDS}
        return set(task_ids) <= done

    return stop


async def wait_subscribers(live: LiveServer, count: int, timeout: float = 10) -> None:
    """Wait until the server's hub has ``count`` subscribers (a subscription is live)."""
    async with asyncio.timeout(timeout):
        while True:  # the hub has no notification for this; poll its counter
            if live.runtime.hub.subscriber_count >= count:
                return
            await asyncio.sleep(0.005)


# ------------------------------------------------------------ replay and completion


async def test_after_sequence_zero_yields_every_event_once_and_completes(
    server: LiveServer,
) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id)

    events = await collect(server, taskId=task_id, after=0)

    expected = await stored(server, task_id)
    assert rows(events) == expected, "afterSequence:0 must deliver every stored event once"
    assert [e["sequence"] for e in events] == list(range(1, len(expected) + 1))
    assert events[-1]["kind"] == "COMPLETED", "the stream must end with the final event"
    assert all(e["taskId"] == task_id for e in events)


async def test_after_sequence_k_replays_only_later_events(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id)
    await wait_final(server.runtime, [task_id])
    expected = await stored(server, task_id)

    events = await collect(server, taskId=task_id, after=3)

    assert rows(events) == expected[3:], "afterSequence:3 must replay exactly the events > 3"
    assert events[0]["sequence"] == 4


async def test_final_task_with_after_sequence_completes_at_once_with_the_rest(
    server: LiveServer,
) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id)
    await wait_final(server.runtime, [task_id])
    expected = await stored(server, task_id)
    n = len(expected)

    # A final task must not leave the stream open: a short bound proves "at once".
    tail = await collect(server, timeout=5, taskId=task_id, after=n - 2)
    nothing_left = await collect(server, timeout=5, taskId=task_id, after=n)

    assert rows(tail) == expected[n - 2 :]
    assert tail[-1]["kind"] == "COMPLETED"
    assert nothing_left == [], "afterSequence = last sequence of a final task: no events"


async def test_final_task_without_after_sequence_completes_at_once_with_no_events(
    server: LiveServer,
) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id)
    await wait_final(server.runtime, [task_id])

    events = await collect(server, timeout=5, taskId=task_id)

    assert events == [], "without afterSequence nothing is replayed, and the task is final"


async def test_unknown_task_id_is_an_error_not_an_endless_stream(server: LiveServer) -> None:
    with pytest.raises(TransportQueryError) as raised:
        await collect(server, timeout=5, taskId="no-such-task", after=0)

    assert raised.value.errors, "the error must carry GraphQL errors"
    error = raised.value.errors[0]
    assert "no task with id 'no-such-task'" in error["message"], error
    assert error.get("extensions", {}).get("code") == "NOT_FOUND", error


async def test_negative_after_sequence_is_an_error(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id)

    with pytest.raises(TransportQueryError) as raised:
        await collect(server, timeout=5, taskId=task_id, after=-1)

    assert raised.value.errors is not None
    assert "afterSequence" in raised.value.errors[0]["message"]


# ------------------------------------------------------------------------- filters


async def filtered_run(
    live: LiveServer, match_env: str, other_env: str, **variables: Any
) -> tuple[list[Event], list[str], list[str]]:
    """Subscribe with ``variables``, then run tasks on both environments.

    The order makes the "nothing else" check exact: every task of ``other_env`` is final
    before the last matching task is created, so any event of them that the filter let
    through would have been delivered before the last matching final event.
    """
    base = live.runtime.hub.subscriber_count
    matching: list[str] = []
    consumer = asyncio.create_task(
        collect_until(
            live, lambda seen: finals_seen(matching)(seen) and len(matching) == 2, **variables
        )
    )
    try:
        await wait_subscribers(live, base + 1)
        other_1 = await deploy(live, other_env, "o1")
        await wait_final(live.runtime, [other_1])
        matching.append(await deploy(live, match_env, "m1"))
        other_2 = await deploy(live, other_env, "o2")
        await wait_final(live.runtime, [matching[0], other_2])
        matching.append(await deploy(live, match_env, "m2"))
        async with asyncio.timeout(20):
            events = await consumer
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    return events, matching, [other_1, other_2]


async def test_entity_id_subscription_gets_only_that_entitys_events(server: LiveServer) -> None:
    project_id, env_a = await project_and_environment(server)
    env_b = await second_environment(server, project_id, "stage")

    events, matching, others = await filtered_run(server, env_a, env_b, entityId=env_a)

    assert {e["taskId"] for e in events} == set(matching), (
        f"entityId filter let through events of other tasks {others}"
    )
    assert all(e["entityId"] == env_a for e in events)
    for task_id in matching:
        assert rows(of_task(events, task_id)) == await stored(server, task_id)


async def test_project_id_subscription_gets_only_that_projects_events(
    server: LiveServer,
) -> None:
    project_a, env_a = await project_and_environment(server, "alpha")
    _, env_b = await project_and_environment(server, "beta")

    events, matching, others = await filtered_run(server, env_a, env_b, projectId=project_a)

    assert {e["taskId"] for e in events} == set(matching), (
        f"projectId filter let through events of other tasks {others}"
    )
    for task_id in matching:
        assert rows(of_task(events, task_id)) == await stored(server, task_id)


async def test_subscription_without_arguments_gets_events_of_all_tasks(
    server: LiveServer,
) -> None:
    _, env_a = await project_and_environment(server, "alpha")
    _, env_b = await project_and_environment(server, "beta")
    base = server.runtime.hub.subscriber_count
    task_ids: list[str] = []
    consumer = asyncio.create_task(
        collect_until(server, lambda seen: len(task_ids) == 3 and finals_seen(task_ids)(seen))
    )
    try:
        await wait_subscribers(server, base + 1)
        task_ids.append(await deploy(server, env_a))
        task_ids.append(await deploy(server, env_b))
        restart = await server.runtime.tasks.restart_workload(inputs.RestartWorkload("shop", "web"))
        assert restart.value is not None, restart.user_errors
        task_ids.append(restart.value.id)
        async with asyncio.timeout(20):
            events = await consumer
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer

    assert {e["taskId"] for e in events} == set(task_ids)
    for task_id in task_ids:
        assert rows(of_task(events, task_id)) == await stored(server, task_id), (
            f"the unfiltered subscription missed or repeated events of task {task_id}"
        )


# --------------------------------------------------------- concurrency and fan-out


async def test_replay_while_the_task_runs_is_gapless_and_duplicate_free(
    server_factory: ServerFactory,
) -> None:
    # 4 steps of 0.3 s: the subscriptions below open well before the task ends.
    live: LiveServer = await server_factory(step_delay=0.3)
    _, env_id = await project_and_environment(live)
    async with live.runtime.hub.subscribe(lambda e: True) as probe:
        task_id = await deploy(live, env_id)
        async with asyncio.timeout(10), events_of_sub(probe) as probe_events:
            async for event in probe_events:  # a few events are stored, the task runs on
                if event.task_id == task_id and event.sequence >= 5:
                    break
    base = live.runtime.hub.subscriber_count
    afters = [0, 2, 4, 6, 8]

    async with live.ws_client() as session:

        async def one(after: int) -> list[Event]:
            seen: list[Event] = []
            async for item in session.subscribe(op(TASK_EVENTS, taskId=task_id, after=after)):
                seen.append(item["taskEvents"])
            return seen

        runs = asyncio.gather(*(one(after) for after in afters))
        try:
            async with asyncio.timeout(30):
                await wait_subscribers(live, base + len(afters))
                async with live.runtime.db.read() as db:
                    task = await db.get(Task, task_id)
                assert task is not None
                status = task.status
                results = await runs
        finally:
            runs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runs

    assert not TaskStatus(status).is_final, (
        "test premise: the task must still run while the subscriptions replay"
    )
    expected = await stored(live, task_id)
    assert expected[-1][1] == "COMPLETED"
    for after, events in zip(afters, results, strict=True):
        sequences = [e["sequence"] for e in events]
        assert sequences == list(range(after + 1, len(expected) + 1)), (
            f"afterSequence:{after} got {sequences}: gaps or duplicates"
        )
        assert rows(events) == expected[after:], f"afterSequence:{after} differs from storage"


async def test_one_task_fans_out_identically_to_twenty_subscribers(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(step_delay=0.05)
    _, env_id = await project_and_environment(live)
    task_id = await deploy(live, env_id)

    async with asyncio.timeout(30):
        streams = await asyncio.gather(
            *(
                subscribe_all(live.ws_client(), op(TASK_EVENTS, taskId=task_id, after=0))
                for _ in range(20)
            )
        )

    expected = await stored(live, task_id)
    assert expected[-1][1] == "COMPLETED"
    for index, events in enumerate(streams):
        assert events == streams[0], f"subscriber {index} got a different stream"
        assert rows(events) == expected, f"subscriber {index} differs from storage"


ALIASED_EVENTS = gql("""
subscription($taskId: ID, $after: Int, $withKind: Boolean!) {
  e: taskEvents(taskId: $taskId, afterSequence: $after) {
    n: sequence
    kind @include(if: $withKind)
    ...Where
  }
}
fragment Where on TaskEvent { status entityId }""")


async def subscribe_items(client: Client, request: GraphQLRequest) -> list[dict[str, Any]]:
    async with client as session:
        return [item async for item in session.subscribe(request)]


async def test_subscribers_with_different_selections_each_get_their_own_shape(
    server_factory: ServerFactory,
) -> None:
    """Results are shared between subscribers of one operation (graphql/shared_events.py):
    an alias, a fragment or a variable makes another operation, with its own result, and
    every one of them is executed once per event, not once per subscriber."""
    live: LiveServer = await server_factory(step_delay=0.05)
    _, env_id = await project_and_environment(live)
    task_id = await deploy(live, env_id)
    aliased = [op(ALIASED_EVENTS, taskId=task_id, after=0, withKind=flag) for flag in (True, False)]
    plain = [op(TASK_EVENTS, taskId=task_id, after=0) for _ in range(3)]

    async with asyncio.timeout(30):
        with_kind, without_kind, *plains = await asyncio.gather(
            *(subscribe_items(live.ws_client(), request) for request in aliased + plain)
        )

    expected = await stored(live, task_id)
    assert [item["taskEvents"] for item in plains[0]] == [item["taskEvents"] for item in plains[1]]
    assert rows([item["taskEvents"] for item in plains[2]]) == expected
    assert [(e["n"], e["kind"], e["status"]) for e in (item["e"] for item in with_kind)] == [
        (sequence, kind, status) for sequence, kind, status, _ in expected
    ]
    assert all(set(item["e"]) == {"n", "kind", "status", "entityId"} for item in with_kind)
    assert all(set(item["e"]) == {"n", "status", "entityId"} for item in without_kind)
    # Three distinct operations (the two variable sets of ALIASED_EVENTS, TASK_EVENTS),
    # each executed once for each event of the task, whatever the number of subscribers.
    ids = {e.id for e in await events_of(live.runtime, task_id)}
    executed = Counter(event_id for event_id, _ in shared_events._RESULTS._items if event_id in ids)
    assert len(executed) == len(expected)
    assert set(executed.values()) == {3}


# ------------------------------------------------------------------ slow subscribers


def record(sequence: int) -> EventRecord:
    return EventRecord(
        id=f"e{sequence}",
        task_id="t1",
        sequence=sequence,
        kind=EventKind.LOG,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        status=TaskStatus.RUNNING,
        progress=0.5,
        entity_id="env-1",
        type=TaskType.DEPLOYMENT,
        project_id=None,
        step=None,
        message=f"line {sequence}",
        artifact=None,
    )


async def test_hub_ends_a_lagging_subscriber_and_keeps_feeding_the_others() -> None:
    """A real EventHub over the real memory broadcast, with a 5-event buffer."""
    hub = EventHub(lambda: create_broadcast("memory://"), buffer_size=5)
    await hub.start()
    try:
        async with hub.subscribe(lambda e: True) as slow, hub.subscribe(lambda e: True) as fast:
            fast_seen: list[int] = []
            consumed: asyncio.Queue[int] = asyncio.Queue()

            async def consume() -> None:
                async with events_of_sub(fast) as fast_events:
                    async for event in fast_events:
                        fast_seen.append(event.sequence)
                        consumed.put_nowait(event.sequence)
                        if event.sequence == 20:
                            return

            consumer = asyncio.create_task(consume())
            try:
                async with asyncio.timeout(10):
                    for sequence in range(1, 21):
                        await hub.publish(record(sequence))
                        assert await consumed.get() == sequence  # the fast one keeps up
                    await consumer
            finally:
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer

            slow_seen: list[int] = []
            with pytest.raises(SubscriberOverflow) as raised:
                async with asyncio.timeout(5):
                    async for event in slow:
                        slow_seen.append(event.sequence)
    finally:
        await hub.stop()

    assert fast_seen == list(range(1, 21)), "the fast subscriber must not be affected"
    assert slow_seen == [1, 2, 3, 4, 5], "the slow one keeps what fit in its buffer, in order"
    assert "fell more than 5 events behind" in str(raised.value)
    assert OVERFLOW_HINT in str(raised.value)


async def test_server_hub_uses_the_configured_subscriber_buffer(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(subscriber_buffer=5)
    _, env_id = await project_and_environment(live)
    seen: list[int] = []
    async with live.runtime.hub.subscribe(lambda e: True) as lagging:
        task_id = await deploy(live, env_id)  # about 30 events; nobody reads ``lagging``
        await wait_final(live.runtime, [task_id])
        with pytest.raises(SubscriberOverflow, match=OVERFLOW_HINT):
            async with asyncio.timeout(5):
                async for event in lagging:
                    seen.append(event.sequence)
    assert seen == [1, 2, 3, 4, 5]


class SilentClient:
    """graphql-transport-ws over a bare loopback socket, driven by websockets' sans-I/O
    protocol: no library task reads in the background, so while ``recv`` is not called
    nothing is read at all and the server's sends to it block once the buffers are full
    (a real client that stopped reading)."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.pending: deque[Any] = deque()
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, live: LiveServer) -> SilentClient:
        address = urlsplit(live.url)
        assert address.hostname is not None and address.port is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        protocol = ClientProtocol(
            parse_uri(live.ws_url),
            subprotocols=[Subprotocol("graphql-transport-ws")],
            max_size=None,
        )
        client = cls(sock, protocol)
        try:
            async with asyncio.timeout(5):
                await client.loop.sock_connect(sock, (address.hostname, address.port))
                protocol.send_request(protocol.connect())
                await client.flush()
                response = await client.next_event()
            assert isinstance(response, Response) and response.status_code == 101, response
        except BaseException:
            sock.close()
            raise
        return client

    async def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await self.loop.sock_sendall(self.sock, chunk)

    async def next_event(self) -> Any:
        while not self.pending:
            data = await self.loop.sock_recv(self.sock, 65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.pending.extend(self.protocol.events_received())
            await self.flush()  # pongs, close replies
            if not data and not self.pending:
                raise ConnectionError("connection closed by the server")
        return self.pending.popleft()

    async def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        await self.flush()

    async def recv(self) -> dict[str, Any]:
        while True:
            event = await self.next_event()
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                message: dict[str, Any] = json.loads(event.data)
                return message
            if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                raise ConnectionError(f"closed by the server: {self.protocol.close_rcvd}")

    async def close(self) -> None:
        try:
            self.protocol.send_close(1000)
            await self.flush()
        except OSError:
            pass
        finally:
            self.sock.close()


async def stays_above(read: Callable[[], int], floor: int, duration: float = 0.5) -> bool:
    """Whether ``read()`` stays above ``floor`` for ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    until = loop.time() + duration
    while loop.time() < until:
        if read() <= floor:
            return False
        await asyncio.sleep(0.02)
    return True


def send_buffer_limit() -> int:
    """Most bytes the kernel may queue for one TCP socket (send buffers autotune up to it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


async def block_sends(
    live: LiveServer, client: SilentClient, bulky_task: str, idle: int
) -> list[str]:
    """Make the server's sends to ``client`` block for good; returns the ids it subscribed.

    ``bulky_task`` is a finished task with about 15 KB of metadata; a query naming it 30
    times is answered with about 450 KB. Enough of them to overrun the largest send
    buffer the kernel may grow, the receive window and the transport's buffer together
    leave the server with bytes it cannot write. A replay subscription of the task is
    then sent as a witness, again until one stays stuck: it holds a hub subscription until
    its last event is sent, so while it stays subscribed the connection's sends are
    blocked. ``idle`` is the hub's subscriber count without witnesses.
    """
    aliases = " ".join(f"t{i}: task(id: $t) {{ metadata }}" for i in range(30))
    listing = {"query": f"query($t: ID!) {{ {aliases} }}", "variables": {"t": bulky_task}}
    queries = (send_buffer_limit() + 2 * 1024 * 1024) // 400_000 + 1
    ids = [f"fill-{i}" for i in range(queries)]
    for fill_id in ids:
        await client.send({"type": "subscribe", "id": fill_id, "payload": listing})
    replay = "subscription($t: ID) { taskEvents(taskId: $t, afterSequence: 0) { sequence } }"
    payload = {"query": replay, "variables": {"t": bulky_task}}
    for attempt in range(50):
        ids.append(f"witness-{attempt}")
        await client.send({"type": "subscribe", "id": ids[-1], "payload": payload})
        await asyncio.sleep(0.2)
        if await stays_above(lambda: live.runtime.hub.subscriber_count, idle):
            return ids
    raise AssertionError("test premise: the server's sends to the silent client never blocked")


async def test_slow_socket_is_ended_with_overflow_while_a_fast_one_gets_everything(
    server_factory: ServerFactory,
) -> None:
    # Room for the ~15 queries that fill the socket besides the subscriptions under test.
    live: LiveServer = await server_factory(
        subscriber_buffer=5, step_delay=0.02, ws_max_subscriptions=200
    )
    _, env_id = await project_and_environment(live)
    bulky = await live.runtime.tasks.deploy(
        inputs.Deploy(env_id, "0", options=inputs.TaskOptions(metadata={"blob": "x" * 15_000}))
    )
    assert bulky.value is not None, bulky.user_errors
    bulky_task = bulky.value.id
    await wait_final(live.runtime, [bulky_task])
    base = live.runtime.hub.subscriber_count

    slow = await SilentClient.open(live)
    try:
        await slow.send({"type": "connection_init"})
        async with asyncio.timeout(5):
            assert await slow.recv() == {"type": "connection_ack"}
        # The subscription that will fall behind: every event, no replay.
        query = "subscription { taskEvents { taskId sequence kind status progress } }"
        await slow.send({"type": "subscribe", "id": "slow", "payload": {"query": query}})
        await wait_subscribers(live, base + 1)
        open_ids = {"slow", *await block_sends(live, slow, bulky_task, base + 1)}

        # The fast one follows the environment live from before the task exists: with
        # a replay first, its live events would queue behind the replay, and on a busy
        # machine more than 5 of them could (and once did) end it too.
        subscribed = live.runtime.hub.subscriber_count
        fast_feed = asyncio.create_task(
            collect_until(live, lambda seen: seen[-1]["kind"] in FINAL_KINDS, entityId=env_id)
        )
        await wait_subscribers(live, subscribed + 1)
        task_id = await deploy(live, env_id, "1")
        async with asyncio.timeout(30):
            fast = await fast_feed
        await wait_final(live.runtime, [task_id])
        expected = await stored(live, task_id)

        # The client finally reads everything the server has for it.
        slow_data: list[Event] = []
        slow_errors: list[Any] = []
        async with asyncio.timeout(30):
            while open_ids:
                message = await slow.recv()
                if message["type"] in ("complete", "error"):
                    open_ids.discard(message["id"])
                if message.get("id") != "slow":
                    continue
                if message["type"] == "error":
                    slow_errors.extend(message["payload"])
                elif message["type"] == "next":
                    slow_errors.extend(message["payload"].get("errors") or [])
                    if data := message["payload"].get("data"):
                        slow_data.append(data["taskEvents"])
                        if data["taskEvents"]["kind"] in FINAL_KINDS:
                            open_ids.discard("slow")  # kept up after all: it never ends
    finally:
        await slow.close()

    assert rows(fast) == expected, "the fast subscriber must get every event through COMPLETED"
    assert fast[-1]["kind"] == "COMPLETED"

    slow_sequences = [e["sequence"] for e in of_task(slow_data, task_id)]
    assert slow_errors, "the lagging subscription must end with an error, not silently"
    assert slow_sequences == list(range(1, len(slow_sequences) + 1)), slow_sequences
    assert 0 < len(slow_sequences) < len(expected), (
        f"the lagging subscription should have been ended early, got {slow_sequences}"
    )

    resumed = await collect(live, taskId=task_id, after=slow_sequences[-1])
    assert rows(of_task(slow_data, task_id)) + rows(resumed) == expected, (
        "resuming with afterSequence = last seen sequence must yield the rest exactly once"
    )

    messages = [error.get("message", "") for error in slow_errors]
    assert any("fell more than 5 events behind" in m and OVERFLOW_HINT in m for m in messages), (
        f"the client must be told it fell behind and how to resume; it got {messages}"
    )


async def test_overflow_error_text_reaches_the_graphql_client(
    server_factory: ServerFactory,
) -> None:
    """On the queued path (the legacy graphql-ws protocol; graphql-transport-ws delivers
    live-feed events without a queue, and its overflow is the slow-socket test above)."""
    live: LiveServer = await server_factory(subscriber_buffer=1, ws_legacy_protocol=True)
    _, env_id = await project_and_environment(live)
    task_id = await deploy(live, env_id)
    await wait_final(live.runtime, [task_id])
    burst = await stored_events(live.runtime.db, task_id, 0)
    assert len(burst) > 3
    base = live.runtime.hub.subscriber_count
    received: list[Event] = []

    async def consume() -> None:
        legacy = WebsocketsTransport(url=live.ws_url, subprotocols=["graphql-ws"])
        async with Client(transport=legacy) as session:
            async for item in session.subscribe(op(TASK_EVENTS)):
                received.append(item["taskEvents"])

    consumer = asyncio.create_task(consume())
    try:
        await wait_subscribers(live, base + 1)
        # A burst on the broadcast (as many tasks or other processes would produce),
        # posted without yielding: it goes out as one batch, and the subscription's
        # 1-event buffer overflows.
        posted = [live.runtime.hub.post(event) for event in burst]
        await asyncio.gather(*posted)
        with pytest.raises(TransportQueryError) as raised:
            async with asyncio.timeout(10):
                await consumer
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError, TransportQueryError):
            await consumer

    assert len(received) < len(burst), "the lagging subscription must be ended early"
    messages = [e.get("message", "") for e in raised.value.errors or []]
    assert any("fell more than 1 events behind" in m and OVERFLOW_HINT in m for m in messages), (
        "the overflow reason (SubscriberOverflow) must reach the client so it knows to "
        f"resubscribe with afterSequence; it got {messages}"
    )
