"""Sandboxes expire: the reaper queues one teardown per sandbox, across restarts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from cloudops.db.models import Environment, Task
from cloudops.db.types import utcnow
from cloudops.domain import TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.conftest import make_project, wait_final


async def expire_now(runtime: Runtime, env_id: str) -> None:
    """Move expiresAt into the past (the smallest TTL is one minute)."""
    async with runtime.db.write() as session:
        await session.execute(
            update(Environment)
            .where(Environment.id == env_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_reaper_tears_an_expired_sandbox_down_once(runtime_factory: Any) -> None:
    runtime: Runtime = await runtime_factory()
    project = await make_project(runtime)
    created = await runtime.tasks.create_sandbox(inputs.CreateSandbox(project.id, "pr-9", 5))
    assert created.value is not None
    env_id = created.value.entity_id
    await wait_final(runtime, [created.value.id])
    assert await runtime.tasks.reap_expired_sandboxes() == 0  # not expired yet
    await expire_now(runtime, env_id)
    assert await runtime.tasks.reap_expired_sandboxes() == 1
    assert await runtime.tasks.reap_expired_sandboxes() == 0
    await runtime.stop()

    restarted: Runtime = await runtime_factory(reaper_interval=0.05)
    async with restarted.db.read() as session:
        tasks = (
            (
                await session.execute(
                    select(Task).where(Task.entity_id == env_id).order_by(Task.queue_seq)
                )
            )
            .scalars()
            .all()
        )
        env = await session.get(Environment, env_id)
    assert env is not None and env.expired
    assert [t.input.get("action") for t in tasks] == ["provision", "teardown"]
    [teardown] = await wait_final(restarted, [tasks[1].id])
    assert teardown.status == TaskStatus.COMPLETED
    assert [s["name"] for s in teardown.steps] == ["stop workloads", "delete resources", "release"]
    assert await restarted.tasks.reap_expired_sandboxes() == 0


async def test_deploy_to_an_expired_sandbox_is_refused(runtime: Runtime) -> None:
    project = await make_project(runtime)
    created = await runtime.tasks.create_sandbox(inputs.CreateSandbox(project.id, "pr-3", 5))
    assert created.value is not None
    await expire_now(runtime, created.value.entity_id)
    await runtime.tasks.reap_expired_sandboxes()
    refused = await runtime.tasks.deploy(inputs.Deploy(created.value.entity_id, "1"))
    assert [(e.field, e.code) for e in refused.user_errors] == [
        (["input", "environmentId"], "CONFLICT")
    ]
