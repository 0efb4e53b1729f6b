"""Shared fixtures: a real runtime on a real database, SQLite and PostgreSQL.

``runtime_factory`` (and so ``runtime``) is parametrized over the two backends the control
plane supports: "sqlite" is the embedded default (a SQLite file in the test's temporary
directory and the in-process bus); "postgres" is a fresh PostgreSQL database (a copy of the
migrated template of :mod:`tests.pg`) with the PostgreSQL session bus, with short leases
and a fast poll so that the tests stay fast. ``make_settings`` is unchanged, SQLite only:
the API and acceptance tests build their settings with it and run on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudops.db.models import Environment, Project, Task, TaskEvent
from cloudops.domain import FINAL_STATUSES
from cloudops.events.hub import SubscriberOverflow
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.settings import Settings
from tests import pg
from tests.pg import postgres_url  # noqa: F401  (the fixture, for every test)

RuntimeFactory = Callable[..., Runtime]

#: The backends every ``runtime``/``runtime_factory`` test runs on (the fixture's param ids).
BACKENDS = ["sqlite", "postgres"]

#: Bound for Runtime.stop() at teardown: the shutdown grace (2s) and then some.
STOP_TIMEOUT = 10.0

#: Settings of the "postgres" backend besides its database: short leases (a heartbeat
#: every second) and a fast poll for lost notifications and expired leases.
POSTGRES_SETTINGS: dict[str, Any] = {
    "bus": "postgres",
    "lease_seconds": 3.0,
    "bus_poll_interval": 0.2,
}


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


@pytest.fixture(params=BACKENDS)
async def runtime_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Start runtimes on one database of the param's backend; every one still running is
    stopped at teardown (and the PostgreSQL database dropped)."""
    backend: str = request.param
    base: dict[str, Any] = {}
    url: str | None = None
    if backend == "postgres":
        url = await pg.fresh_database()  # fails, saying why, without PostgreSQL
        base = {"database_url": url, **POSTGRES_SETTINGS}
    started: list[Runtime] = []

    async def start(*, run_worker: bool = True, **overrides: Any) -> Runtime:
        settings = make_settings(tmp_path, **{**base, **overrides})
        runtime = Runtime.build(settings, run_worker=run_worker)
        await runtime.start()
        started.append(runtime)
        return runtime

    problems: list[str] = []
    try:
        yield start
    finally:
        for runtime in started:
            if runtime._started:
                problem = await stop_within(runtime, STOP_TIMEOUT)
                if problem is not None:
                    problems.append(problem)
        if url is not None:
            await pg.drop_database(url)
    if problems:
        pytest.fail(f"stopping a runtime ({backend}) failed: {'; '.join(problems)}", pytrace=False)


async def stop_within(runtime: Runtime, timeout: float) -> str | None:
    """Stop ``runtime``; what went wrong, if anything. A stop() that hangs or fails is
    finished by force (closing the bus ends every receive() with BusClosed), so that the
    next test is not affected."""
    try:
        async with asyncio.timeout(timeout) as deadline:
            await runtime.stop()
        if not deadline.expired():
            return None
        # The deadline's cancel reached stop() but was swallowed on the way (Worker.stop
        # suppresses the CancelledError of its receive loop): stop() hung all the same.
        raise TimeoutError
    except TimeoutError:
        problem = (
            f"Runtime.stop() did not return within {timeout}s: the worker never finished "
            "stopping its receive loop, whose cancellation was swallowed (see "
            "test_postgres_cancelled_receive_stops_even_when_woken_at_the_same_time in "
            "tests/contract/test_session_bus.py)"
        )
    except Exception as exc:
        problem = f"Runtime.stop() raised {exc!r}"
    await runtime.bus.close()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(timeout):
            await runtime.stop()
    await runtime.db.dispose()
    return problem


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

    wanted = set(task_ids)
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with runtime.hub.subscribe(lambda e: e.task_id in wanted) as sub:
                    done = await all_final()
                    if done is not None:
                        return done
                    async for event in sub:
                        if event.kind.is_final and (done := await all_final()) is not None:
                            return done
            except SubscriberOverflow:
                # A test with a tiny subscriber buffer: one transaction can publish more
                # events than it holds. Look at the database again and resubscribe.
                continue


async def events_of(runtime: Runtime, task_id: str) -> list[TaskEvent]:
    async with runtime.db.read() as session:
        rows = await session.execute(
            select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.sequence)
        )
        return list(rows.scalars())
