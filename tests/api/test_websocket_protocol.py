"""The WebSocket protocols on the wire (raw frames with ``websockets``): graphql-transport-ws
with its close codes and limits, and the legacy graphql-ws only when it is enabled."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from cloudops.services import inputs
from tests.api.conftest import LiveServer, project_and_environment
from tests.conftest import events_of, wait_final

ServerFactory = Callable[..., Any]
Message = dict[str, Any]

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")

ALL_EVENTS = "subscription { taskEvents { taskId sequence kind } }"
TASK_EVENTS = """subscription($id: ID!) {
  taskEvents(taskId: $id, afterSequence: 0) { taskId sequence kind } }"""


@asynccontextmanager
async def raw(
    live: LiveServer, subprotocol: Subprotocol = TRANSPORT_WS
) -> AsyncIterator[ClientConnection]:
    async with connect(
        live.ws_url, subprotocols=[subprotocol], proxy=None, open_timeout=5, close_timeout=2
    ) as ws:
        yield ws


async def send(ws: ClientConnection, message: Message) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection, timeout: float = 5) -> Message:
    async with asyncio.timeout(timeout):
        message: Message = json.loads(await ws.recv())
    return message


async def initialised(ws: ClientConnection) -> None:
    await send(ws, {"type": "connection_init"})
    assert await recv(ws) == {"type": "connection_ack"}


async def closed_with(ws: ClientConnection, timeout: float = 5) -> tuple[int | None, str | None]:
    """Wait for the server to close; the close code and reason it sent."""
    async with asyncio.timeout(timeout):
        await ws.wait_closed()
    return ws.close_code, ws.close_reason


def subscribe(op_id: str, query: str, **variables: Any) -> Message:
    return {
        "type": "subscribe",
        "id": op_id,
        "payload": {"query": query, "variables": variables},
    }


async def wait_subscribers(live: LiveServer, count: int) -> None:
    async with asyncio.timeout(10):
        while True:  # the hub has no notification for this; poll its counter
            if live.runtime.hub.subscriber_count == count:
                return
            await asyncio.sleep(0.005)


async def finished_task(live: LiveServer) -> str:
    _, env_id = await project_and_environment(live)
    result = await live.runtime.tasks.deploy(inputs.Deploy(env_id, "1"))
    assert result.value is not None, result.user_errors
    await wait_final(live.runtime, [result.value.id])
    return result.value.id


# ---------------------------------------------------------------- graphql-transport-ws


async def test_connection_init_is_acknowledged_and_the_subprotocol_selected(
    server: LiveServer,
) -> None:
    async with raw(server) as ws:
        assert ws.subprotocol == "graphql-transport-ws"
        await initialised(ws)


async def test_ping_is_answered_with_pong(server: LiveServer) -> None:
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
        await send(ws, {"type": "ping", "payload": {"n": 1}})
        assert (await recv(ws))["type"] == "pong"


async def test_live_feed_is_written_by_the_hub_and_a_complete_stops_it(
    server: LiveServer,
) -> None:
    """taskEvents without taskId over graphql-transport-ws: the hub writes each event to
    the socket itself (graphql/live_outlet.py). Every event still arrives once, in order,
    in Strawberry's message format; after the client's complete nothing more comes for
    that id and the hub lets the subscription go; a replay (taskId) keeps the queue."""
    hub = server.runtime.hub
    base, base_direct = hub.subscriber_count, hub.direct_subscriber_count
    earlier = await finished_task(server)
    _, env_id = await project_and_environment(server, "feed")
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, subscribe("feed", ALL_EVENTS))
        await send(ws, subscribe("stopped", ALL_EVENTS))
        await wait_subscribers(server, base + 2)
        assert hub.direct_subscriber_count == base_direct + 2
        await send(ws, {"type": "complete", "id": "stopped"})
        await wait_subscribers(server, base + 1)
        await send(ws, {"type": "subscribe", "id": "replay", "payload": {
            "query": TASK_EVENTS.replace("afterSequence: 0", "afterSequence: 1"),
            "variables": {"id": earlier},
        }})  # fmt: skip

        result = await server.runtime.tasks.deploy(inputs.Deploy(env_id, "2"))
        assert result.value is not None, result.user_errors
        task_id = result.value.id
        messages: list[Message] = []
        replay_done = final_seen = False
        while not (replay_done and final_seen):
            message = await recv(ws, timeout=30)
            assert message.get("id") != "stopped", f"sent after complete: {message}"
            if message["id"] == "replay":
                replay_done = replay_done or message["type"] == "complete"
                continue
            assert message["id"] == "feed" and message["type"] == "next", message
            assert set(message) == {"id", "type", "payload"}
            assert set(message["payload"]) == {"data"}
            event = message["payload"]["data"]["taskEvents"]
            if event["taskId"] == task_id:
                messages.append(message)
                final_seen = event["kind"] in ("COMPLETED", "FAILED")
        assert hub.direct_subscriber_count == base_direct + 1, "the replay is not direct"

    got = [m["payload"]["data"]["taskEvents"] for m in messages]
    stored = await events_of(server.runtime, task_id)
    assert [(e["sequence"], e["kind"]) for e in got] == [(e.sequence, e.kind) for e in stored]
    await wait_subscribers(server, base)  # the disconnect let the live feed go too


async def test_live_feed_subscribers_whose_connections_are_reset_are_dropped(
    server_factory: ServerFactory,
) -> None:
    """Clients that vanish mid-stream (a TCP reset, as a killed browser leaves) while the
    hub writes to their sockets: the hub lets them go and the subscriber that stays gets
    every event of the task, in order."""
    live: LiveServer = await server_factory(step_delay=0.05)
    hub = live.runtime.hub
    base = hub.subscriber_count
    _, env_id = await project_and_environment(live)
    async with raw(live) as stays:
        await initialised(stays)
        await send(stays, subscribe("feed", ALL_EVENTS))
        doomed: list[ClientConnection] = []
        for _ in range(3):
            ws = await connect(live.ws_url, subprotocols=[TRANSPORT_WS], proxy=None)
            await initialised(ws)
            await send(ws, subscribe("feed", ALL_EVENTS))
            doomed.append(ws)
        await wait_subscribers(live, base + 4)

        result = await live.runtime.tasks.deploy(inputs.Deploy(env_id, "1"))
        assert result.value is not None, result.user_errors
        task_id = result.value.id
        got: list[int] = []
        while True:
            message = await recv(stays, timeout=30)
            event = message["payload"]["data"]["taskEvents"]
            if event["taskId"] != task_id:
                continue
            got.append(event["sequence"])
            if len(got) == 2:  # the stream is flowing: now the others vanish
                for ws in doomed:
                    sock = ws.transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    ws.transport.abort()  # RST, no close handshake
            if event["kind"] in ("COMPLETED", "FAILED"):
                break
        await wait_subscribers(live, base + 1)

    stored = await events_of(live.runtime, task_id)
    assert got == [e.sequence for e in stored] and got == list(range(1, len(got) + 1))
    await wait_subscribers(live, base)


async def test_subscribe_before_connection_init_is_closed_4401(server: LiveServer) -> None:
    async with raw(server) as ws:
        await send(ws, subscribe("1", ALL_EVENTS))
        assert await closed_with(ws) == (4401, "Unauthorized")


async def test_no_connection_init_in_time_is_closed_4408(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory(ws_init_timeout=0.5)
    async with raw(live) as ws:
        started = asyncio.get_running_loop().time()
        code, reason = await closed_with(ws, timeout=5)
        waited = asyncio.get_running_loop().time() - started
    assert (code, reason) == (4408, "Connection initialisation timeout")
    assert 0.3 <= waited < 3, f"closed after {waited:.2f} s, the setting says 0.5 s"


async def test_connection_init_in_time_is_not_closed_by_the_init_timeout(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(ws_init_timeout=0.5)
    async with raw(live) as ws:
        await initialised(ws)
        await asyncio.sleep(0.8)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}, "an initialised connection must stay open"


async def test_second_connection_init_is_closed_4429(server: LiveServer) -> None:
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, {"type": "connection_init"})
        assert await closed_with(ws) == (4429, "Too many initialisation requests")


async def test_duplicate_subscription_id_is_closed_4409(server: LiveServer) -> None:
    base = server.runtime.hub.subscriber_count
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, subscribe("same", ALL_EVENTS))
        await wait_subscribers(server, base + 1)  # the first one is running
        await send(ws, subscribe("same", ALL_EVENTS))
        assert await closed_with(ws) == (4409, "Subscriber for same already exists")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"type": "subscribe", "id": "1"}, "Failed to parse message"),
        ({"type": "subscribe", "payload": {"query": ALL_EVENTS}}, "Failed to parse message"),
        ({"type": "unheard_of", "id": "1"}, "Unknown message type: unheard_of"),
        ({"id": "1"}, "Failed to parse message"),
        ("this is not json", "WebSocket message must be valid JSON"),
        (b"\x00\x01binary", "WebSocket message type must be text"),
    ],
    ids=[
        "subscribe-without-payload",
        "subscribe-without-id",
        "unknown-type",
        "no-type",
        "not-json",
        "binary",
    ],
)
async def test_invalid_message_is_closed_4400(
    server: LiveServer, frame: Message | str | bytes, reason: str
) -> None:
    async with raw(server) as ws:
        await initialised(ws)
        await ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)
        assert await closed_with(ws) == (4400, reason)


async def test_invalid_query_is_an_error_for_that_id_and_the_connection_stays_usable(
    server: LiveServer,
) -> None:
    task_id = await finished_task(server)
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, subscribe("bad", "subscription { taskEvents { noSuchField } }"))
        error = await recv(ws)
        assert error["type"] == "error" and error["id"] == "bad", error
        assert "noSuchField" in error["payload"][0]["message"], error

        await send(ws, subscribe("good", TASK_EVENTS, id=task_id))
        sequences: list[int] = []
        while (message := await recv(ws))["type"] == "next":
            assert message["id"] == "good"
            sequences.append(message["payload"]["data"]["taskEvents"]["sequence"])
        assert message == {"id": "good", "type": "complete"}
        assert sequences == [e.sequence for e in await events_of(server.runtime, task_id)]


async def test_syntax_error_in_a_subscription_closes_4400(server: LiveServer) -> None:
    """Strawberry's choice for an unparsable document: close the connection (4400)."""
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, subscribe("1", "subscription { taskEvents { "))
        code, reason = await closed_with(ws)
    assert code == 4400
    assert reason and "Syntax Error" in reason


async def test_complete_from_the_client_stops_the_stream(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    base = server.runtime.hub.subscriber_count
    async with raw(server) as ws:
        await initialised(ws)
        await send(ws, subscribe("live", ALL_EVENTS))
        await wait_subscribers(server, base + 1)
        first = await server.runtime.tasks.deploy(inputs.Deploy(env_id, "1"))
        assert first.value is not None
        message = await recv(ws)
        assert message["type"] == "next" and message["id"] == "live", message

        await send(ws, {"type": "complete", "id": "live"})
        await wait_subscribers(server, base)  # the server let go of the stream
        await wait_final(server.runtime, [first.value.id])
        second = await server.runtime.tasks.deploy(inputs.Deploy(env_id, "2"))
        assert second.value is not None
        await wait_final(server.runtime, [second.value.id])

        # Whatever of the first task was in flight may still arrive; nothing of the second.
        await send(ws, {"type": "ping"})
        while (message := await recv(ws))["type"] != "pong":
            assert message["id"] == "live", message
            assert message["payload"]["data"]["taskEvents"]["taskId"] == first.value.id, (
                "an event published after the client's complete was delivered"
            )


async def test_more_subscriptions_than_allowed_are_refused_with_an_error(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(ws_max_subscriptions=2)
    base = live.runtime.hub.subscriber_count
    async with raw(live) as ws:
        await initialised(ws)
        await send(ws, subscribe("1", ALL_EVENTS))
        await send(ws, subscribe("2", ALL_EVENTS))
        await wait_subscribers(live, base + 2)

        await send(ws, subscribe("3", ALL_EVENTS))
        refusal = await recv(ws)
        assert refusal == {
            "id": "3",
            "type": "error",
            "payload": [{"message": "Subscription limit reached"}],
        }, refusal
        assert live.runtime.hub.subscriber_count == base + 2

        # The connection stays usable, and a freed slot can be used again.
        await send(ws, {"type": "complete", "id": "1"})
        await wait_subscribers(live, base + 1)
        await send(ws, subscribe("4", ALL_EVENTS))
        await wait_subscribers(live, base + 2)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}


# ------------------------------------------------------------------- legacy graphql-ws


async def test_legacy_subprotocol_is_refused_by_default(server: LiveServer) -> None:
    async with raw(server, LEGACY_WS) as ws:
        assert ws.subprotocol is None, "the handshake must not select graphql-ws"
        code, reason = await closed_with(ws)
    assert (code, reason) == (4406, "Subprotocol not acceptable")


async def test_legacy_subprotocol_works_when_enabled(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory(ws_legacy_protocol=True)
    task_id = await finished_task(live)
    async with raw(live, LEGACY_WS) as ws:
        assert ws.subprotocol == "graphql-ws"
        await send(ws, {"type": "connection_init"})
        assert await recv(ws) == {"type": "connection_ack"}

        await send(
            ws,
            {
                "type": "start",
                "id": "1",
                "payload": {"query": TASK_EVENTS, "variables": {"id": task_id}},
            },
        )
        sequences: list[int] = []
        while (message := await recv(ws))["type"] != "complete":
            if message["type"] == "ka":  # keep-alive of the legacy protocol
                continue
            assert message["type"] == "data" and message["id"] == "1", message
            sequences.append(message["payload"]["data"]["taskEvents"]["sequence"])
        assert message == {"type": "complete", "id": "1"}
    assert sequences == [e.sequence for e in await events_of(live.runtime, task_id)]
    assert sequences, "the legacy protocol delivered no data"


async def test_transport_ws_still_works_when_legacy_is_enabled(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(ws_legacy_protocol=True)
    async with raw(live) as ws:
        assert ws.subprotocol == "graphql-transport-ws"
        await initialised(ws)
