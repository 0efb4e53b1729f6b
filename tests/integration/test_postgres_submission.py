"""A submission on PostgreSQL: the task, its QUEUED event, its queue position and its bus
message in one statement, and still strict FIFO per entity.

The statement numbers the task's position under a transaction lock on its entity, so two
submissions to one entity commit in the order of their positions; these tests hold that
lock from outside to show the submission waits for it, and count what one submission
sends to the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, select

from cloudops.bus.postgres import asyncpg_dsn
from cloudops.db.models import BusSession, Task, TaskEvent
from cloudops.domain import EventKind, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.conftest import make_environment

pytestmark = pytest.mark.parametrize("runtime_factory", ["postgres"], indirect=True)

ENTITY = "k8s:default/web"


async def quiet_runtime(runtime_factory: Callable[..., Any]) -> Runtime:
    """A runtime with no worker, and its sandbox reaper (which reads at start) stopped:
    what the engine sends is then the submission's alone."""
    runtime: Runtime = await runtime_factory(run_worker=False)
    assert runtime.reaper is not None
    await runtime.reaper.stop()
    return runtime


@contextmanager
def recorded(runtime: Runtime) -> Iterator[dict[str, list[Any]]]:
    """The statements the runtime's engine sends, its commits, and the isolation level
    of each transaction it begins."""
    seen: dict[str, list[Any]] = {"statements": [], "commit": [], "begin": []}
    engine = runtime.db.engine.sync_engine

    def statement(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        seen["statements"].append(sql)

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", statement),
        ("commit", lambda *args: seen["commit"].append(args)),
        # On an autocommit connection SQLAlchemy still "begins", but sends no BEGIN.
        (
            "begin",
            lambda conn: seen["begin"].append(conn.get_execution_options().get("isolation_level")),
        ),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


async def test_a_submission_is_one_statement_with_no_transaction_around_it(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime = await quiet_runtime(runtime_factory)
    with recorded(runtime) as seen:
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
    assert result.value is not None, result.user_errors
    assert len(seen["statements"]) == 1, seen["statements"]
    assert seen["begin"] == ["AUTOCOMMIT"] and not seen["commit"], seen
    task = result.value
    async with runtime.db.read() as session:
        stored = await session.get(Task, task.id)
        events = (
            (await session.execute(select(TaskEvent).where(TaskEvent.task_id == task.id)))
            .scalars()
            .all()
        )
        bus_session = await session.get(BusSession, ENTITY)
    assert stored is not None and stored.status == TaskStatus.QUEUED
    assert stored.queue_seq == task.queue_seq and task.queue_seq is not None
    assert [(e.sequence, e.kind) for e in events] == [(1, EventKind.QUEUED.value)]
    assert bus_session is not None and bus_session.owner is None


async def test_submissions_number_positions_in_order_and_a_deploy_reads_before_it_writes(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime = await quiet_runtime(runtime_factory)
    env = await make_environment(runtime)
    with recorded(runtime) as seen:
        first = await runtime.tasks.deploy(inputs.Deploy(env.id, "v1"))
    assert first.value is not None, first.user_errors
    writes = [sql for sql in seen["statements"] if "INSERT" in sql]
    assert len(writes) == 1 and not seen["commit"], seen
    second = await runtime.tasks.deploy(inputs.Deploy(env.id, "v2"))
    assert second.value is not None
    assert second.value.queue_seq > first.value.queue_seq


async def test_a_submission_waits_for_its_entitys_lock_so_positions_commit_in_order(
    runtime_factory: Callable[..., Any],
) -> None:
    """Another submission to the same entity holds the lock (as a concurrent one would,
    from taking its position until it commits): ours neither takes a position nor commits
    before that one ends, and a submission to another entity is not held up."""
    runtime = await quiet_runtime(runtime_factory)
    holder = await asyncpg.connect(asyncpg_dsn(runtime.db.url))
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT pg_advisory_xact_lock(hashtext($1))", ENTITY)
        waiting = asyncio.create_task(
            runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
        )
        other = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "api"))
        assert other.value is not None, other.user_errors
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the submission did not wait for its entity's lock"
        async with runtime.db.read() as session:
            queued = (await session.scalars(select(Task.id).where(Task.entity_id == ENTITY))).all()
        assert queued == [], "the waiting submission was visible before the lock was free"
        await holding.commit()
        result = await asyncio.wait_for(waiting, 10)
    finally:
        await holder.close()
    assert result.value is not None, result.user_errors
    assert result.value.queue_seq > other.value.queue_seq


async def test_a_refused_submission_writes_nothing_and_sends_no_write(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime = await quiet_runtime(runtime_factory)
    with recorded(runtime) as seen:
        result = await runtime.tasks.deploy(inputs.Deploy("no-such-env", "v1"))
    assert result.value is None
    assert [e.field for e in result.user_errors] == [["input", "environmentId"]]
    assert not [sql for sql in seen["statements"] if "INSERT" in sql], seen["statements"]
    async with runtime.db.read() as session:
        assert (await session.scalars(select(Task.id))).all() == []
