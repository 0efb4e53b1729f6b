"""A task's attempt on PostgreSQL: the claim reads the task, and the attempt's last write
releases its entity's session in the same statement.

So the worker sends no read of its own before STARTED and no release after the end. The
claim's read may be a moment old: STARTED is written only if the task is still at the
version the claim read. The release is fenced like any other: a worker whose lease was
taken over releases nothing, whether or not its write went through.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text

from cloudops.bus.base import Delivery
from cloudops.bus.postgres import PostgresSessionBus
from cloudops.db.models import BusSession
from cloudops.domain import EventKind, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.tasks.journal import Change, Guard
from tests.conftest import events_of, wait_final

pytestmark = pytest.mark.parametrize("runtime_factory", ["postgres"], indirect=True)

ENTITY = "k8s:default/web"

#: The ORM's read of one task by its id (what the worker sent after every claim).
READ_BY_ID = re.compile(r"FROM tasks\s+WHERE tasks\.id = ")
RELEASE = re.compile(r"UPDATE bus_sessions SET owner\s*=")


async def test_the_worker_reads_nothing_after_the_claim_and_releases_with_its_last_write(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime: Runtime = await runtime_factory()
    seen: list[str] = []
    engine = runtime.db.engine.sync_engine

    def statement(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        seen.append(sql)

    event.listen(engine, "before_cursor_execute", statement)
    try:
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
        assert result.value is not None, result.user_errors
        [task] = await wait_final(runtime, [result.value.id])
    finally:
        event.remove(engine, "before_cursor_execute", statement)
    assert task.status == TaskStatus.COMPLETED
    assert not [sql for sql in seen if READ_BY_ID.search(sql)], "the task was read after the claim"
    # Every statement that hands the session back (the claim, which takes it, excluded):
    # only the attempt's last write.
    releases = [sql for sql in seen if RELEASE.search(sql) and "fence + 1" not in sql]
    assert len(releases) == 1, releases
    assert "UPDATE tasks" in releases[0] and "INSERT INTO task_events" in releases[0]
    async with runtime.db.read() as session:
        held = await session.get(BusSession, ENTITY)
    assert held is not None and held.owner is None and held.task_id is None


async def test_a_task_changed_since_the_claim_read_it_is_not_started_from_that_read(
    runtime_factory: Callable[..., Any],
) -> None:
    """An event lands on the task after the claim read it, the task still QUEUED and on the
    same attempt (as when another worker's attempt was interrupted in between): the
    attempt must not start from the old read. It writes nothing, hands the session back,
    and the next claim reads the task afresh and runs it."""
    runtime: Runtime = await runtime_factory()
    assert runtime.worker is not None
    bus = runtime.worker.bus
    receive = bus.receive
    deliveries: list[Delivery] = []

    async def receive_then_change() -> Delivery:
        delivery = await receive()
        deliveries.append(delivery)
        if len(deliveries) == 1:
            async with runtime.journal.transaction() as txn:
                noted = await txn.append(
                    delivery.message.task_id,
                    EventKind.LOG,
                    Guard({TaskStatus.QUEUED}),
                    message="written between the claim and STARTED",
                )
            assert noted is not None
        return delivery

    bus.receive = receive_then_change  # type: ignore[method-assign]
    result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
    assert result.value is not None, result.user_errors
    [task] = await wait_final(runtime, [result.value.id])

    assert task.status == TaskStatus.COMPLETED and task.attempt == 1
    first, second = deliveries[:2]
    assert first.task is not None and first.task.last_sequence == 1
    assert second.task is not None and second.task.last_sequence == 2
    kinds = [e.kind for e in await events_of(runtime, task.id)]
    assert kinds[:3] == [EventKind.QUEUED, EventKind.LOG, EventKind.STARTED], kinds
    assert kinds.count(EventKind.STARTED) == 1, kinds


async def test_a_last_write_under_a_lease_taken_over_releases_nothing(
    runtime_factory: Callable[..., Any],
) -> None:
    """Worker one's lease expired and worker two claimed the entity. One's last write is
    refused by its guard, and the release riding in it, fenced by one's lease, leaves two
    holding the session; two's own last write releases it."""
    runtime: Runtime = await runtime_factory(run_worker=False)
    result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
    assert result.value is not None, result.user_errors
    task_id = result.value.id
    one = PostgresSessionBus(runtime.db, lease_seconds=30)
    two = PostgresSessionBus(runtime.db, lease_seconds=30)
    try:
        first = await asyncio.wait_for(one.receive(), 10)
        async with runtime.db.autocommit() as conn:
            await conn.execute(
                text("UPDATE bus_sessions SET lease_until = now() - interval '1 second'")
            )
        second = await asyncio.wait_for(two.receive(), 10)
        assert first.lease is not None and second.lease is not None
        assert second.lease.fence > first.lease.fence
        release = one.release_in_statement
        assert release is not None

        async def last_write(lease: Any) -> Any:
            async with runtime.journal.transaction(one_append=True) as txn:
                return await txn.append_all(
                    task_id,
                    Guard({TaskStatus.QUEUED}, 1, lease),
                    [Change(EventKind.CANCELLED, {"status": TaskStatus.CANCELLED.value})],
                    bus=release.bind(lease),
                )

        assert await last_write(first.lease) is None
        async with runtime.db.read() as session:
            held = await session.get(BusSession, ENTITY)
        assert held is not None and held.owner == two.owner and held.fence == second.fence

        assert await last_write(second.lease) is not None
        async with runtime.db.read() as session:
            held = await session.get(BusSession, ENTITY)
        assert held is not None and held.owner is None
    finally:
        await one.close()
        await two.close()
    kinds = [e.kind for e in await events_of(runtime, task_id)]
    assert kinds == [EventKind.QUEUED, EventKind.CANCELLED], kinds
