"""The bench-only one-step task, and the hook that puts it into any process we start.

There is no public one-step task type, yet the headline throughput must measure the
control plane's own cost per task (queue, start, one step, complete), not a handler's.
So the bench registers a handler with a single no-op step under the RESTART_WORKLOAD type,
in every process that runs tasks: in-process runtimes call :func:`install`, and
``python -m bench.serve`` / ``python -m bench.worker`` call :func:`patch_runtime` before
handing over to the real ``cloudops`` command, so what runs is exactly ``cloudops serve``
or ``cloudops worker`` with one handler swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.domain import TaskType
from cloudops.handlers.base import RetryPolicy, Step, StepContext, TaskView
from cloudops.handlers.registry import HandlerRegistry, default_registry

ONE_STEP_TYPE = TaskType.RESTART_WORKLOAD


async def _run(ctx: StepContext) -> None:
    await ctx.simulate_work()  # STEP_DELAY=0: only the cancellation check


class OneStepHandler:
    type = ONE_STEP_TYPE
    retry = RetryPolicy()
    writes_on_completion = False

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        return (Step("run", _run),)

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        return None


def install(registry: HandlerRegistry) -> None:
    registry.register(OneStepHandler())


def bench_registry(data_dir: Path) -> HandlerRegistry:
    registry = default_registry(data_dir)
    install(registry)
    return registry


def patch_runtime() -> None:
    """Make every Runtime built in this process use :func:`bench_registry`."""
    import cloudops.runtime

    cloudops.runtime.default_registry = bench_registry  # type: ignore[attr-defined]
