"""Redis stopped and restarted mid-run: tasks go on, a subscriber resumes with afterSequence
and ends with every event exactly once; health says so while it is down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import gql
from gql.transport.exceptions import TransportQueryError

from cloudops.services import inputs
from tests.api.conftest import LiveServer, op, project_and_environment
from tests.conftest import events_of, wait_final
from tests.redis_server import RedisServer

HEALTH = gql("{ health { status database broadcast broadcastConnected } }")
EVENTS = gql("""subscription($id: ID!, $after: Int) { taskEvents(taskId: $id, afterSequence: $after) {
  sequence kind status progress } }""")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def follow(live: LiveServer, task_id: str, errors: list[str]) -> list[dict[str, Any]]:
    """What a careful client does: on an error, resubscribe after the last event it has."""
    seen: list[dict[str, Any]] = []
    while True:
        after = seen[-1]["sequence"] if seen else 0
        try:
            async with live.ws_client() as ws:
                async for item in ws.subscribe(op(EVENTS, id=task_id, after=after)):
                    seen.append(item["taskEvents"])
            return seen
        except TransportQueryError as exc:
            errors.append(str(exc))
            await asyncio.sleep(0.2)


async def test_redis_restart_mid_run_loses_nothing(
    server_factory: Any, redis_server: RedisServer
) -> None:
    live: LiveServer = await server_factory(
        broadcast_url=redis_server.url, broadcast_heartbeat=0.2, step_delay=0.4
    )
    assert live.runtime.hub.backend_name == "redis" and live.runtime.hub.connected
    _, env_id = await project_and_environment(live)
    ids = []
    for version in ("1", "2", "3"):
        result = await live.runtime.tasks.deploy(inputs.Deploy(env_id, version))
        assert result.value is not None
        ids.append(result.value.id)
    errors: list[str] = []
    followers = [asyncio.create_task(follow(live, task_id, errors)) for task_id in ids]
    await asyncio.sleep(1.0)
    redis_server.stop()
    await asyncio.sleep(1.5)  # tasks keep running while Redis is down
    redis_server.start()
    async with asyncio.timeout(60):
        streams = await asyncio.gather(*followers)
    tasks = await wait_final(live.runtime, ids)
    assert all(t.status == "COMPLETED" for t in tasks), "a task was lost while Redis was down"
    assert any("BROADCAST_LOST" in e or "broadcast" in e for e in errors), errors
    for task_id, seen in zip(ids, streams, strict=True):
        stored = await events_of(live.runtime, task_id)
        assert [e["sequence"] for e in seen] == [e.sequence for e in stored], "gap or duplicate"
        assert [e["kind"] for e in seen] == [e.kind for e in stored]
        assert seen[-1]["kind"] == "COMPLETED"


async def health_now(live: LiveServer) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The GraphQL health, and /healthz's status code and body."""
    async with live.client() as session:
        health = (await session.execute(HEALTH))["health"]
    async with live.http() as http:
        response = await http.get("/healthz")
    return health, response.status_code, response.json()


async def test_health_is_degraded_while_redis_is_down_and_the_api_still_serves(
    server_factory: Any, redis_server: RedisServer
) -> None:
    """Live events pause without Redis; everything else goes on. Health says degraded
    (the contract: a dependency check fails) yet /healthz stays 200: every API process
    shares the one Redis, and a load balancer dropping them all would stop what works."""
    live: LiveServer = await server_factory(broadcast_url=redis_server.url, broadcast_heartbeat=0.2)
    health, code, body = await health_now(live)
    assert health == {
        "status": "ok", "database": True, "broadcast": "redis", "broadcastConnected": True
    }  # fmt: skip
    assert code == 200 and body["status"] == "ok" and body["broadcast_connected"] is True, body

    redis_server.stop()
    async with asyncio.timeout(20):  # until this process notices
        while True:
            health, code, body = await health_now(live)
            if not health["broadcastConnected"]:
                break
            await asyncio.sleep(0.05)
    assert health == {
        "status": "degraded", "database": True, "broadcast": "redis", "broadcastConnected": False
    }  # fmt: skip
    assert code == 200, body
    assert body["status"] == "degraded" and body["broadcast_connected"] is False, body
    assert body["database"] is True, body
    # Meanwhile the API takes mutations, and their tasks run to the end.
    _, env_id = await project_and_environment(live)
    answer = await live.execute(
        """mutation($env: ID!) { deploy(input: {environmentId: $env, version: "1"}) {
             task { id } userErrors { message } } }""",
        {"env": env_id},
    )
    deployed = answer["data"]["deploy"]
    assert deployed["userErrors"] == [] and deployed["task"], answer
    async with asyncio.timeout(30):  # read from the database: no live events to wait on
        while True:
            task = await live.runtime.tasks.get(deployed["task"]["id"])
            assert task is not None
            if task.status == "COMPLETED":
                break
            await asyncio.sleep(0.05)

    redis_server.start()
    async with asyncio.timeout(30):
        await live.runtime.hub.wait_connected()
    health, code, body = await health_now(live)
    assert health["status"] == "ok" and health["broadcastConnected"] is True, health
    assert code == 200 and body["status"] == "ok", body
