"""Subscriptions over plain HTTP: graphql-sse ("distinct connections" mode) and the
multipart subscription protocol, read with a bare httpx client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
from strawberry.http.streaming import SSE_HEARTBEAT_INTERVAL, SSETransport

from cloudops.services import inputs
from tests.api.conftest import LiveServer, project_and_environment
from tests.conftest import events_of

ServerFactory = Callable[..., Any]
SSEvent = tuple[str, str]  # (event name, data)

TASK_EVENTS = """subscription($id: ID!) {
  taskEvents(taskId: $id, afterSequence: 0) { taskId sequence kind status progress } }"""
MULTIPART_ACCEPT = 'multipart/mixed;subscriptionSpec="1.0", application/json'


async def running_task(live: LiveServer) -> str:
    _, env_id = await project_and_environment(live)
    result = await live.runtime.tasks.deploy(inputs.Deploy(env_id, "1"))
    assert result.value is not None, result.user_errors
    return result.value.id


async def stored_rows(live: LiveServer, task_id: str) -> list[tuple[int, str, str, float]]:
    return [
        (e.sequence, e.kind, e.status, e.progress) for e in await events_of(live.runtime, task_id)
    ]


def rows(events: list[dict[str, Any]]) -> list[tuple[int, str, str, float]]:
    return [(e["sequence"], e["kind"], e["status"], e["progress"]) for e in events]


async def read_sse(response: httpx.Response) -> list[SSEvent]:
    """Events (name, data) up to and including ``complete``; comments (pings) are skipped."""
    events: list[SSEvent] = []
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
        elif line == "":
            if name != "message" or data:
                events.append((name, data))
                if name == "complete":
                    break
            name, data = "message", ""
    return events


async def test_sse_streams_every_event_then_complete(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory(step_delay=0.02)
    task_id = await running_task(live)  # it runs while it is streamed: replay, then live

    async with (
        live.http() as http,
        asyncio.timeout(20),
        http.stream(
            "POST",
            "/graphql",
            json={"query": TASK_EVENTS, "variables": {"id": task_id}},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        content_type = response.headers["content-type"]
        events = await read_sse(response)

    assert content_type.split(";")[0].strip() == "text/event-stream", content_type
    names = [name for name, _ in events]
    assert names[-1] == "complete", names
    assert set(names[:-1]) == {"next"}, names
    payloads = [json.loads(data) for _, data in events[:-1]]
    assert all("errors" not in p for p in payloads), payloads
    streamed = [p["data"]["taskEvents"] for p in payloads]
    expected = await stored_rows(live, task_id)
    assert [e["sequence"] for e in streamed] == list(range(1, len(expected) + 1))
    assert rows(streamed) == expected
    assert streamed[-1]["kind"] == "COMPLETED"


async def test_sse_unknown_task_is_an_error_event_and_the_stream_ends(
    server: LiveServer,
) -> None:
    async with (
        server.http() as http,
        asyncio.timeout(10),
        http.stream(
            "POST",
            "/graphql",
            json={"query": TASK_EVENTS, "variables": {"id": "no-such-task"}},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        events = await read_sse(response)

    assert [name for name, _ in events] == ["next", "complete"], events
    payload = json.loads(events[0][1])
    assert "no task with id 'no-such-task'" in payload["errors"][0]["message"], payload


def test_sse_heartbeat_interval_keeps_idle_streams_alive() -> None:
    """Strawberry sends ": ping" comments on idle SSE streams; proxies commonly cut idle
    connections after 30-60 s, so the interval must stay well below that."""
    assert SSE_HEARTBEAT_INTERVAL <= 15
    assert SSETransport().heartbeat_interval <= 15
    assert SSETransport().heartbeat_message(json.dumps) == ": ping\r\n\r\n"


async def test_multipart_subscription_streams_every_event(server: LiveServer) -> None:
    task_id = await running_task(server)

    async with (
        server.http() as http,
        asyncio.timeout(20),
        http.stream(
            "POST",
            "/graphql",
            json={"query": TASK_EVENTS, "variables": {"id": task_id}},
            headers={"Accept": MULTIPART_ACCEPT},
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        content_type = response.headers["content-type"]
        body = (await response.aread()).decode()

    media_type, *params = [part.strip() for part in content_type.split(";")]
    assert media_type == "multipart/mixed", content_type
    assert "boundary=graphql" in params, content_type
    assert any(p.startswith("subscriptionSpec=1.0") for p in params), content_type
    assert body.rstrip().endswith("--graphql--"), "the stream must end with the closing boundary"

    streamed: list[dict[str, Any]] = []
    for part in body.split("--graphql"):
        head, _, content = part.partition("\r\n\r\n")
        if "application/json" not in head:
            continue
        document = json.loads(content.strip())
        if "payload" in document:  # parts without one are heartbeats
            assert "errors" not in document["payload"], document
            streamed.append(document["payload"]["data"]["taskEvents"])

    expected = await stored_rows(server, task_id)
    assert rows(streamed) == expected
    assert streamed[-1]["kind"] == "COMPLETED"
