"""SANDBOX: provision -> set TTL -> ready; the reaper's teardown runs on the same session.

The Environment itself is created by the mutation (so it is visible at once); this handler
brings it up, or, for a task with ``action = teardown``, takes it down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.db.models import Environment
from cloudops.domain import TaskType
from cloudops.errors import PermanentStepError
from cloudops.handlers.base import RetryPolicy, Step, StepContext, TaskView

TEARDOWN = "teardown"


async def _environment(ctx: StepContext) -> Environment:
    async with ctx.services.db.read() as session:
        env = await session.get(Environment, ctx.task.entity_id)
    if env is None:
        raise PermanentStepError(f"sandbox environment {ctx.task.entity_id} does not exist")
    return env


async def provision(ctx: StepContext) -> None:
    env = await _environment(ctx)
    await ctx.log(f"provisioning sandbox {env.name}")
    await ctx.simulate_work()


async def set_ttl(ctx: StepContext) -> None:
    env = await _environment(ctx)
    expires = env.expires_at.isoformat() if env.expires_at else "never"
    await ctx.log(f"sandbox {env.name} expires at {expires}")
    await ctx.simulate_work(2)


async def ready(ctx: StepContext) -> None:
    await ctx.simulate_work(2)
    await ctx.log("sandbox ready")


async def stop_workloads(ctx: StepContext) -> None:
    env = await _environment(ctx)
    await ctx.log(f"sandbox {env.name} expired: stopping its workloads")
    await ctx.simulate_work()


async def delete_resources(ctx: StepContext) -> None:
    await ctx.simulate_work()
    await ctx.log("resources deleted")


async def release(ctx: StepContext) -> None:
    await ctx.simulate_work(2)
    await ctx.log("sandbox torn down")


class SandboxHandler:
    type = TaskType.SANDBOX
    retry = RetryPolicy()
    writes_on_completion = False

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        if task_input.get("action") == TEARDOWN:
            return (
                Step("stop workloads", stop_workloads),
                Step("delete resources", delete_resources),
                Step("release", release),
            )
        return (Step("provision", provision), Step("set TTL", set_ttl), Step("ready", ready))

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        return None
