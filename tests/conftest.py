"""Shared fixtures: a real runtime on a real SQLite file in a temporary directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudops.db.models import Environment, Project, Task, TaskEvent
from cloudops.domain import FINAL_STATUSES
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.settings import Settings
from tests import pg

RuntimeFactory = Callable[..., Runtime]


def pytest_report_header(config: pytest.Config) -> str:
    return pg.describe()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pg.drop_created_databases()


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp / 'cloudops.db'}",
        "data_dir": tmp / "data",
        "step_delay": 0.0,
        "retry_base_delay": 0.01,
        "shutdown_grace": 2.0,
        "reaper_interval": 3600.0,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def runtime_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start runtimes on one database; every one still running is stopped at teardown."""
    started: list[Runtime] = []

    async def start(*, run_worker: bool = True, **overrides: Any) -> Runtime:
        runtime = Runtime.build(make_settings(tmp_path, **overrides), run_worker=run_worker)
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime._started:
            await runtime.stop()


@pytest.fixture
async def runtime(runtime_factory: Callable[..., Any]) -> Runtime:
    result: Runtime = await runtime_factory()
    return result


async def make_environment(runtime: Runtime, name: str = "prod") -> Environment:
    project = await runtime.projects.create_project(inputs.CreateProject(name=f"proj-{name}"))
    assert project.value is not None, project.user_errors
    env = await runtime.projects.create_environment(
        inputs.CreateEnvironment(project.value.id, name, "PROD")
    )
    assert env.value is not None, env.user_errors
    return env.value


async def make_project(runtime: Runtime, name: str = "shop") -> Project:
    project = await runtime.projects.create_project(inputs.CreateProject(name=name))
    assert project.value is not None, project.user_errors
    return project.value


async def wait_final(runtime: Runtime, task_ids: list[str], timeout: float = 30.0) -> list[Task]:
    """Wait until every task is final, woken by the event hub rather than by polling."""

    async def all_final() -> list[Task] | None:
        async with runtime.db.read() as session:
            rows = (await session.execute(select(Task).where(Task.id.in_(task_ids)))).scalars()
            tasks = list(rows)
        if len(tasks) == len(task_ids) and all(t.status in FINAL_STATUSES for t in tasks):
            return tasks
        return None

    async with runtime.hub.subscribe(lambda e: e.task_id in set(task_ids)) as sub:
        async with asyncio.timeout(timeout):
            done = await all_final()
            if done is not None:
                return done
            async for event in sub:
                if event.kind.is_final and (done := await all_final()) is not None:
                    return done
    raise AssertionError("unreachable")


async def events_of(runtime: Runtime, task_id: str) -> list[TaskEvent]:
    async with runtime.db.read() as session:
        rows = await session.execute(
            select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.sequence)
        )
        return list(rows.scalars())
