"""A task on PostgreSQL: the task, its QUEUED event, its queue position and its bus
message in one statement, still strict FIFO per entity; and a task whose handler writes
nothing on completion runs to COMPLETED without a single BEGIN or COMMIT.

The statement numbers the task's position under a transaction lock on its entity, so two
submissions to one entity commit in the order of their positions; these tests hold that
lock from outside to show the submission waits for it, and count what one submission
sends to the database.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, select

from cloudops.bus.base import Delivery
from cloudops.bus.postgres import CHANNEL, PostgresSessionBus, asyncpg_dsn
from cloudops.db.models import BusSession, Environment, Task, TaskEvent
from cloudops.domain import EventKind, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.conftest import make_environment, wait_final

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
def recorded(runtime: Runtime) -> Iterator[list[tuple[str | None, str]]]:
    """Each statement the runtime's engine sends, with its connection's isolation level:
    one on an AUTOCOMMIT connection is sent alone, with no BEGIN or COMMIT around it."""
    seen: list[tuple[str | None, str]] = []
    engine = runtime.db.engine.sync_engine

    def statement(conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        seen.append((conn.get_execution_options().get("isolation_level"), sql))

    event.listen(engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)


#: A statement on the control plane's own tables (not the simulated cluster's, nor the
#: bus's statistics refresh).
OURS = re.compile(r"\b(UPDATE|INSERT INTO|FROM) (tasks|task_events|bus_sessions|environments)\b")


def in_transactions(seen: list[tuple[str | None, str]]) -> list[str]:
    return [sql for isolation, sql in seen if isolation != "AUTOCOMMIT" and OURS.search(sql)]


def writes(seen: list[tuple[str | None, str]]) -> list[str]:
    return [sql for _, sql in seen if "INSERT" in sql or "UPDATE" in sql]


async def test_a_submission_is_one_statement_with_no_transaction_around_it(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime = await quiet_runtime(runtime_factory)
    with recorded(runtime) as seen:
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
    assert result.value is not None, result.user_errors
    assert len(seen) == 1 and not in_transactions(seen), seen
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
    assert len(writes(seen)) == 1 and not in_transactions(seen), seen
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
    assert not writes(seen), seen
    async with runtime.db.read() as session:
        assert (await session.scalars(select(Task.id))).all() == []


async def test_a_task_whose_handler_writes_nothing_on_completion_runs_without_a_transaction(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime: Runtime = await runtime_factory()
    assert runtime.reaper is not None
    await runtime.reaper.stop()
    with recorded(runtime) as seen:
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
        assert result.value is not None, result.user_errors
        [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.COMPLETED
    assert writes(seen) and not in_transactions(seen), in_transactions(seen)


async def test_a_deployment_commits_its_environments_version_with_its_completed_event(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime: Runtime = await runtime_factory()
    assert runtime.reaper is not None
    await runtime.reaper.stop()  # its sweep is a transaction of its own, at any moment
    env = await make_environment(runtime)
    with recorded(runtime) as seen:
        result = await runtime.tasks.deploy(inputs.Deploy(env.id, "v7"))
        assert result.value is not None, result.user_errors
        [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.COMPLETED
    # Two transactions in the run: the plan artifact's row with its event, and COMPLETED
    # with the environment's new version, in that order.
    transactional = in_transactions(seen)
    assert len(transactional) == 3, transactional
    assert "UPDATE tasks" in transactional[1], transactional
    assert transactional[2].startswith("UPDATE environments"), transactional
    async with runtime.db.read() as session:
        stored = await session.get(Environment, env.id)
    assert stored is not None and stored.current_version == "v7"


async def test_the_submissions_notify_wakes_a_waiting_worker_at_once(
    runtime_factory: Callable[..., Any],
) -> None:
    """The bus's part of the statement includes its NOTIFY: a receiver that would
    otherwise poll only every 30 s gets the task as soon as it is submitted."""
    runtime = await quiet_runtime(runtime_factory)
    receiver = PostgresSessionBus(runtime.db, poll_interval=30.0)
    try:
        waiting = asyncio.create_task(receiver.receive())
        await asyncio.sleep(1.0)  # listening, found nothing, asleep until woken
        assert not waiting.done()
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
        assert result.value is not None, result.user_errors
        delivery = await asyncio.wait_for(waiting, 5)
        assert delivery.message.task_id == result.value.id
    finally:
        await receiver.close()


async def test_a_submission_behind_a_held_session_wakes_nobody_and_is_never_stranded(
    runtime_factory: Callable[..., Any],
) -> None:
    """While the entity's session is held, a new task waits behind the running one, so its
    submission sends no NOTIFY: the holder's release wakes a worker for it. The submission
    judges the session as it is when it commits, not as its snapshot saw it: a release that
    commits (and whose wake-up finds nothing) in between must not leave the task waiting
    for the next poll (30 s here)."""
    runtime = await quiet_runtime(runtime_factory)
    receiver = PostgresSessionBus(runtime.db, poll_interval=30.0)
    listener = await asyncpg.connect(asyncpg_dsn(runtime.db.url))
    outside = await asyncpg.connect(asyncpg_dsn(runtime.db.url))
    woken: list[str] = []
    await listener.add_listener(CHANNEL, lambda *_args: woken.append("woken"))

    async def submit(name: str) -> Task:
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", name))
        assert result.value is not None, result.user_errors
        return result.value

    async def finish(delivery: Delivery) -> None:
        """What the worker's last write does: the task final, its session released."""
        await listener.execute(
            "UPDATE tasks SET status = 'COMPLETED' WHERE id = $1", delivery.message.task_id
        )
        await receiver.complete(delivery)

    async def notifications_settle() -> list[str]:
        await listener.execute("SELECT 1")  # a round trip: what was sent before has arrived
        await asyncio.sleep(0.2)
        return woken

    try:
        # A free session: the submission wakes workers.
        web1 = await submit("web")
        assert await notifications_settle() == ["woken"]
        held = await asyncio.wait_for(receiver.receive(), 5)
        assert held.message.task_id == web1.id
        woken.clear()
        # Held: the next task of the entity wakes nobody, and is the holder's to wake.
        web2 = await submit("web")
        assert await notifications_settle() == []
        await finish(held)
        following = await asyncio.wait_for(receiver.receive(), 5)
        assert following.message.task_id == web2.id

        # The race: the submission's snapshot sees the session held, the release commits
        # before the submission does. Holding the entity's submission lock from outside
        # stops the submission after its snapshot was taken.
        api1 = await submit("api")
        running = await asyncio.wait_for(receiver.receive(), 5)
        assert running.message.task_id == api1.id
        blocker = outside.transaction()
        await blocker.start()
        await outside.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1::varchar))", "k8s:default/api"
        )
        submitting = asyncio.create_task(submit("api"))
        for _ in range(100):
            waiting_for_lock = await outside.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if waiting_for_lock:
                break
            await asyncio.sleep(0.05)
        assert waiting_for_lock == 1, "the submission did not reach the entity's lock"
        await finish(running)  # releases and wakes: nothing to claim yet
        waiting = asyncio.create_task(receiver.receive())
        await asyncio.sleep(0.5)
        assert not waiting.done(), "claimed a task that was not committed"
        await blocker.commit()
        api2 = await asyncio.wait_for(submitting, 5)
        delivery = await asyncio.wait_for(waiting, 5)
        assert delivery.message.task_id == api2.id
    finally:
        await receiver.close()
        await listener.close()
        await outside.close()
