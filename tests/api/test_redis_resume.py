"""Redis stopped and restarted mid-run: tasks go on, a subscriber resumes with afterSequence
and ends with every event exactly once."""

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
