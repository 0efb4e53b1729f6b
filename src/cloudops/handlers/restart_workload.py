"""RESTART_WORKLOAD: connect -> restart pods -> wait for rollout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.domain import TaskType
from cloudops.handlers.base import RetryPolicy, Step, StepContext, TaskView


async def connect(ctx: StepContext) -> None:
    workload = await ctx.services.kubernetes.get_workload(ctx.input["namespace"], ctx.input["name"])
    await ctx.log(
        f"connected to {ctx.services.kubernetes.name} cluster: deployment "
        f"{workload.namespace}/{workload.name} at generation {workload.generation}"
    )
    await ctx.simulate_work(2)


async def restart_pods(ctx: StepContext) -> None:
    token = f"cloudops-{ctx.task.id}"
    restarted = await ctx.services.kubernetes.restart(
        ctx.input["namespace"], ctx.input["name"], token
    )
    if restarted:
        await ctx.log("rollout restart requested")
    else:
        await ctx.log("rollout restart already requested by an earlier attempt")
    await ctx.simulate_work()


async def wait_for_rollout(ctx: StepContext) -> None:
    await ctx.simulate_work()
    await ctx.log("rollout complete: all replicas ready")


class RestartWorkloadHandler:
    type = TaskType.RESTART_WORKLOAD
    retry = RetryPolicy()
    writes_on_completion = False

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        return (
            Step("connect", connect),
            Step("restart pods", restart_pods),
            Step("wait for rollout", wait_for_rollout),
        )

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        return None
