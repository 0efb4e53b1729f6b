"""The journal's guarded append, on both backends (on PostgreSQL the UPDATE and the
event's INSERT are one statement; ``one_append`` sends it without BEGIN and COMMIT)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from cloudops.db.models import Task
from cloudops.domain import EventKind, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.tasks.journal import Change, Guard
from tests.conftest import events_of, make_environment


async def queued_task(runtime_factory: Any) -> tuple[Runtime, Task]:
    runtime: Runtime = await runtime_factory(run_worker=False)
    env = await make_environment(runtime)
    result = await runtime.tasks.deploy(inputs.Deploy(env.id, "1"))
    assert result.value is not None
    return runtime, result.value


@pytest.mark.parametrize("one_append", [False, True])
async def test_an_append_stores_the_event_it_returns(
    runtime_factory: Any, one_append: bool
) -> None:
    runtime, task = await queued_task(runtime_factory)
    step = {"name": "validate", "status": "RUNNING"}
    async with runtime.journal.transaction(one_append=one_append) as txn:
        appended = await txn.append(
            task.id,
            EventKind.LOG,
            Guard({TaskStatus.QUEUED}, task.attempt),
            {"progress": 0.25},
            step=step,
            message="hello",
        )
    assert appended is not None and not appended.cancel_requested
    record = appended.event
    stored = (await events_of(runtime, task.id))[-1]
    assert (stored.id, stored.sequence, stored.kind, stored.status, stored.progress) == (
        record.id,
        2,
        EventKind.LOG,
        TaskStatus.QUEUED,
        0.25,
    )
    assert (stored.step, stored.message, stored.entity_id) == (step, "hello", task.entity_id)
    assert record.sequence == 2 and record.progress == 0.25 and record.step == step
    async with runtime.db.read() as session:
        fresh = await session.get(Task, task.id)
    assert fresh is not None and (fresh.last_sequence, fresh.progress) == (2, 0.25)


@pytest.mark.parametrize("one_append", [False, True])
async def test_an_append_whose_guard_fails_writes_nothing(
    runtime_factory: Any, one_append: bool
) -> None:
    runtime, task = await queued_task(runtime_factory)
    async with runtime.journal.transaction(one_append=one_append) as txn:
        appended = await txn.append(
            task.id, EventKind.LOG, Guard({TaskStatus.RUNNING}), {"progress": 0.5}
        )
    assert appended is None
    assert [e.sequence for e in await events_of(runtime, task.id)] == [1]
    async with runtime.db.read() as session:
        fresh = await session.get(Task, task.id)
    assert fresh is not None and (fresh.last_sequence, fresh.progress) == (1, 0.0)


async def test_a_one_append_transaction_refuses_a_second_append(runtime_factory: Any) -> None:
    runtime, task = await queued_task(runtime_factory)
    guard = Guard({TaskStatus.QUEUED})
    with pytest.raises(RuntimeError, match="one event only"):
        async with runtime.journal.transaction(one_append=True) as txn:
            assert await txn.append(task.id, EventKind.LOG, guard, message="first") is not None
            await txn.append(task.id, EventKind.LOG, guard, message="second")
    # The one append committed as it ran: one statement on PostgreSQL, a transaction in
    # one trip on SQLite.
    assert [e.message for e in await events_of(runtime, task.id)][1:] == ["first"]


async def test_a_one_append_write_is_sent_on_a_connection_without_a_session(
    runtime_factory: Any,
) -> None:
    """No ORM session is built for a write that needs none (the worker's writes; on
    PostgreSQL also the submission): one statement on PostgreSQL, a transaction on a
    plain connection on SQLite."""
    runtime, task = await queued_task(runtime_factory)
    sessions: list[object] = []

    def began(session: Session, *_: object) -> None:
        sessions.append(session)

    event.listen(Session, "after_begin", began)
    try:
        async with runtime.journal.transaction(one_append=True) as txn:
            with pytest.raises(RuntimeError, match="no ORM session"):
                _ = txn.session
            appended = await txn.append(task.id, EventKind.LOG, Guard({TaskStatus.QUEUED}))
            assert appended is not None
    finally:
        event.remove(Session, "after_begin", began)
    assert sessions == []
    assert [e.sequence for e in await events_of(runtime, task.id)] == [1, 2]


@pytest.mark.parametrize("one_append", [False, True])
async def test_a_batch_appends_each_event_with_the_state_right_after_it(
    runtime_factory: Any, one_append: bool
) -> None:
    """Several events of one task as one write (one statement on PostgreSQL): numbered
    in order, each with the status and progress it left the task in (an event that sets
    neither keeps the task's before the batch), the task as the last one left it."""
    runtime, task = await queued_task(runtime_factory)
    changes = [
        Change(EventKind.LOG, {}, message="first"),
        Change(EventKind.STEP_PROGRESS, {"progress": 0.4}, step={"name": "validate"}),
        Change(
            EventKind.CANCELLED,
            {"status": TaskStatus.CANCELLED.value, "progress": 0.5},
            message="last",
        ),
    ]
    async with runtime.journal.transaction(one_append=one_append) as txn:
        appended = await txn.append_all(task.id, Guard({TaskStatus.QUEUED}), changes)
    assert appended is not None
    returned = [
        (a.event.id, a.event.sequence, a.event.kind, a.event.status, a.event.progress)
        for a in appended
    ]
    assert [r[1:] for r in returned] == [
        (2, EventKind.LOG, TaskStatus.QUEUED, 0.0),
        (3, EventKind.STEP_PROGRESS, TaskStatus.QUEUED, 0.4),
        (4, EventKind.CANCELLED, TaskStatus.CANCELLED, 0.5),
    ]
    stored = await events_of(runtime, task.id)
    assert [(e.id, e.sequence, e.kind, e.status, e.progress) for e in stored[1:]] == returned
    assert [(e.message, e.step) for e in stored[1:]] == [
        ("first", None),
        (None, {"name": "validate"}),
        ("last", None),
    ]
    async with runtime.db.read() as session:
        fresh = await session.get(Task, task.id)
    assert fresh is not None
    assert (fresh.status, fresh.progress, fresh.last_sequence) == ("CANCELLED", 0.5, 4)


async def test_a_batch_whose_guard_fails_writes_nothing(runtime_factory: Any) -> None:
    runtime, task = await queued_task(runtime_factory)
    changes = [Change(EventKind.LOG, {"progress": 0.3}), Change(EventKind.LOG, {})]
    async with runtime.journal.transaction() as txn:
        assert await txn.append_all(task.id, Guard({TaskStatus.RUNNING}), changes) is None
    assert [e.sequence for e in await events_of(runtime, task.id)] == [1]


async def test_a_batch_guard_is_checked_before_its_first_event_only(
    runtime_factory: Any,
) -> None:
    """The worker writes STARTED (under a QUEUED guard) with the first STEP_STARTED: the
    later events follow from the first, which made the task RUNNING."""
    runtime, task = await queued_task(runtime_factory)
    changes = [
        Change(EventKind.STARTED, {"status": TaskStatus.RUNNING.value}),
        Change(EventKind.STEP_STARTED, {"progress": 0.0}, step={"name": "validate"}),
    ]
    async with runtime.journal.transaction(one_append=True) as txn:
        appended = await txn.append_all(task.id, Guard({TaskStatus.QUEUED}, 1), changes)
    assert appended is not None
    stored = await events_of(runtime, task.id)
    assert [(e.sequence, e.kind, e.status) for e in stored] == [
        (1, EventKind.QUEUED, TaskStatus.QUEUED),
        (2, EventKind.STARTED, TaskStatus.RUNNING),
        (3, EventKind.STEP_STARTED, TaskStatus.RUNNING),
    ]


def trace_sqlite(runtime: Runtime) -> dict[int, list[str]]:
    """What SQLite itself runs (its trace callback: every statement, BEGIN and COMMIT
    included), as the first three words, per connection, on each connection the engine
    hands out from now on."""
    ran: dict[int, list[str]] = {}

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        statements = ran.setdefault(id(dbapi_conn), [])
        trace = dbapi_conn._connection.set_trace_callback(
            lambda sql: statements.append(" ".join(sql.split()[:3]))
        )
        await_(trace)

    event.listen(runtime.db.engine.sync_engine.pool, "checkout", on_checkout)
    return ran


@pytest.mark.parametrize("runtime_factory", ["sqlite"], indirect=True)
async def test_on_sqlite_a_submission_is_one_transaction_that_numbers_itself(
    runtime_factory: Any,
) -> None:
    """A submission with nothing to read is the task's INSERT, which computes its queue
    position itself (no read of max() first), and its event's INSERT, in one write
    transaction (sent to SQLite's thread in one trip)."""
    runtime: Runtime = await runtime_factory(run_worker=False)
    ran = trace_sqlite(runtime)
    positions = []
    for name in ("a", "b", "a"):
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("ns", name))
        assert result.value is not None
        positions.append(result.value.queue_seq)
    assert positions == [1, 2, 3]
    one = ["BEGIN IMMEDIATE", "INSERT INTO tasks", "INSERT INTO task_events", "COMMIT"]
    (submissions,) = [sent for sent in ran.values() if "INSERT INTO tasks" in sent]
    assert submissions == one * 3
    assert [e.kind for e in await events_of(runtime, result.value.id)] == [EventKind.QUEUED]


@pytest.mark.parametrize("runtime_factory", ["sqlite"], indirect=True)
async def test_on_sqlite_a_batch_inserts_its_events_in_one_statement(
    runtime_factory: Any,
) -> None:
    """Each statement is a trip to SQLite's thread under the one write lock: a batch's
    events go in one INSERT (in a session's transaction as in a one-trip write)."""
    runtime, task = await queued_task(runtime_factory)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:3]))

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    changes = [
        Change(EventKind.STARTED, {"status": TaskStatus.RUNNING.value}),
        Change(EventKind.STEP_STARTED, {"progress": 0.0}, step={"name": "restart"}),
    ]
    async with runtime.journal.transaction() as txn:
        assert await txn.append_all(task.id, Guard({TaskStatus.QUEUED}, 1), changes)
    assert sent == ["UPDATE tasks SET", "UPDATE tasks SET", "INSERT INTO task_events"]
    stored = await events_of(runtime, task.id)
    assert [(e.sequence, e.kind, e.status) for e in stored] == [
        (1, EventKind.QUEUED, TaskStatus.QUEUED),
        (2, EventKind.STARTED, TaskStatus.RUNNING),
        (3, EventKind.STEP_STARTED, TaskStatus.RUNNING),
    ]


async def running_task(runtime_factory: Any) -> tuple[Runtime, Task]:
    runtime, task = await queued_task(runtime_factory)
    async with runtime.journal.transaction() as txn:
        started = Change(EventKind.STARTED, {"status": TaskStatus.RUNNING.value})
        assert await txn.append_all(task.id, Guard({TaskStatus.QUEUED}), [started])
    return runtime, task


#: Batches whose earlier events do not say their status or progress, by the guard they
#: are written under; each event's (kind, status, progress) as it must be stored.
BATCHES = {
    "status follows from a one-status guard": (
        {TaskStatus.RUNNING},
        [
            Change(EventKind.STEP_COMPLETED, {"progress": 0.5}, step={"name": "validate"}),
            Change(EventKind.COMPLETED, {"status": TaskStatus.COMPLETED.value, "progress": 1.0}),
        ],
        [
            (EventKind.STEP_COMPLETED, TaskStatus.RUNNING, 0.5),
            (EventKind.COMPLETED, TaskStatus.COMPLETED, 1.0),
        ],
    ),
    "progress left alone by the batch": (
        {TaskStatus.RUNNING},
        [Change(EventKind.LOG, {}, message="a"), Change(EventKind.LOG, {}, message="b")],
        [(EventKind.LOG, TaskStatus.RUNNING, 0.0), (EventKind.LOG, TaskStatus.RUNNING, 0.0)],
    ),
    "status before read from the row (two-status guard)": (
        {TaskStatus.RUNNING, TaskStatus.QUEUED},
        [
            Change(EventKind.LOG, {}, message="a"),
            Change(EventKind.FAILED, {"status": TaskStatus.FAILED.value}),
        ],
        [(EventKind.LOG, TaskStatus.RUNNING, 0.0), (EventKind.FAILED, TaskStatus.FAILED, 0.0)],
    ),
    "progress before read from the row (set later in the batch)": (
        {TaskStatus.RUNNING},
        [
            Change(EventKind.LOG, {}, message="a"),
            Change(EventKind.STEP_PROGRESS, {"progress": 0.7}, step={"name": "validate"}),
        ],
        [
            (EventKind.LOG, TaskStatus.RUNNING, 0.0),
            (EventKind.STEP_PROGRESS, TaskStatus.RUNNING, 0.7),
        ],
    ),
}

#: On SQLite: one UPDATE for the batch where every state follows without the row before,
#: else one per event (RETURNING cannot read the row as it was).
SQLITE_UPDATES = {
    "status follows from a one-status guard": 1,
    "progress left alone by the batch": 1,
    "status before read from the row (two-status guard)": 2,
    "progress before read from the row (set later in the batch)": 2,
}


@pytest.mark.parametrize("batch", list(BATCHES))
async def test_each_event_of_a_batch_carries_the_state_right_after_it(
    runtime_factory: Any, batch: str
) -> None:
    statuses, changes, expected = BATCHES[batch]
    runtime, task = await running_task(runtime_factory)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:3]))

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    async with runtime.journal.transaction() as txn:
        appended = await txn.append_all(task.id, Guard(statuses, 1), changes)
    event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    assert appended is not None
    returned = [
        (a.event.sequence, a.event.kind, a.event.status, a.event.progress) for a in appended
    ]
    assert returned == [(3 + i, *state) for i, state in enumerate(expected)]
    stored = await events_of(runtime, task.id)
    assert [(e.sequence, e.kind, e.status, e.progress) for e in stored[2:]] == returned
    if runtime.db.is_sqlite:
        assert sent.count("UPDATE tasks SET") == SQLITE_UPDATES[batch]
        assert sent.count("INSERT INTO task_events") == 1
    async with runtime.db.read() as session:
        fresh = await session.get(Task, task.id)
    assert fresh is not None
    assert (fresh.status, fresh.progress, fresh.last_sequence) == (
        expected[-1][1].value,
        expected[-1][2],
        2 + len(changes),
    )
