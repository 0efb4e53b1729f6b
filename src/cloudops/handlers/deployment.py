"""DEPLOYMENT: validate -> plan -> apply -> verify; writes artifacts/<taskId>/plan.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.db.models import Environment
from cloudops.domain import ArtifactKind, TaskType
from cloudops.errors import PermanentStepError
from cloudops.handlers.base import RetryPolicy, Step, StepContext, TaskView


async def _environment(ctx: StepContext) -> Environment:
    async with ctx.services.db.read() as session:
        env = await session.get(Environment, ctx.input["environmentId"])
    if env is None:
        raise PermanentStepError(f"environment {ctx.input['environmentId']} no longer exists")
    return env


async def validate(ctx: StepContext) -> None:
    env = await _environment(ctx)
    if env.expired:
        raise PermanentStepError(f"environment {env.name} has expired")
    await ctx.log(f"deploying {ctx.input['version']} to {env.name} ({env.type})")
    await ctx.simulate_work()


async def plan(ctx: StepContext) -> None:
    env = await _environment(ctx)
    document: dict[str, Any] = {
        "taskId": ctx.task.id,
        "environmentId": env.id,
        "environment": env.name,
        "fromVersion": env.current_version,
        "toVersion": ctx.input["version"],
        "image": ctx.input.get("image"),
        "actions": [
            {"action": "pull", "image": ctx.input.get("image") or f"app:{ctx.input['version']}"},
            {"action": "rollout", "strategy": "rolling", "maxUnavailable": "25%"},
            {"action": "healthcheck", "timeoutSeconds": 120},
        ],
    }
    data = json.dumps(document, indent=2, sort_keys=True).encode()
    await ctx.simulate_work(2)
    await ctx.write_artifact(
        ArtifactKind.DEPLOYMENT_PLAN, f"artifacts/{ctx.task.id}/plan.json", data
    )


async def apply(ctx: StepContext) -> None:
    await ctx.simulate_work()
    await ctx.log(f"rolled out {ctx.input['version']}")


async def verify(ctx: StepContext) -> None:
    await ctx.simulate_work()
    await ctx.log("health checks passed")


class DeploymentHandler:
    type = TaskType.DEPLOYMENT
    retry = RetryPolicy()
    writes_on_completion = True

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        return (
            Step("validate", validate),
            Step("plan", plan),
            Step("apply", apply),
            Step("verify", verify),
        )

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        await session.execute(
            update(Environment)
            .where(Environment.id == task.input["environmentId"])
            .values(current_version=task.input["version"])
        )
