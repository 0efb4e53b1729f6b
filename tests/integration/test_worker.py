"""The worker on the embedded default: ordering, retries, dead letters, cancel (invariants 1-4)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from cloudops.db.models import Artifact, Environment, Task
from cloudops.db.types import utcnow
from cloudops.domain import EventKind, StepStatus, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.tasks.journal import Guard
from cloudops.worker.pool import Worker
from tests.conftest import events_of, make_environment, wait_final


def fail(step: str, attempts: int | None = None, **extra: Any) -> inputs.TaskOptions:
    spec: dict[str, Any] = {"failStep": step, **extra}
    if attempts is not None:
        spec["failAttempts"] = attempts
    return inputs.TaskOptions(metadata={"simulate": spec})


async def first(runtime: Runtime, task_id: str, kind: EventKind) -> Any:
    return next(e for e in await events_of(runtime, task_id) if e.kind == kind)


async def test_deployment_runs_every_step_and_sets_current_version(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    result = await runtime.tasks.deploy(inputs.Deploy(env.id, "1.4.2", image="shop:1.4.2"))
    assert result.value is not None
    [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.COMPLETED and task.progress == 1.0
    assert [s["status"] for s in task.steps] == [StepStatus.COMPLETED] * 4
    assert [s["name"] for s in task.steps] == ["validate", "plan", "apply", "verify"]
    async with runtime.db.read() as session:
        assert (await session.get(Environment, env.id)).current_version == "1.4.2"  # type: ignore[union-attr]
        artifact = (await session.execute(select(Artifact))).scalar_one()
    assert artifact.path == f"artifacts/{task.id}/plan.json" and artifact.kind == "deployment_plan"
    stored = await runtime.services.artifacts.stat(artifact.path)
    assert stored is not None and stored.sha256 == artifact.sha256


async def test_invariant_3_event_sequences_are_gapless_and_match_broadcast(
    runtime: Runtime,
) -> None:
    env = await make_environment(runtime)
    seen: list[Any] = []
    async with runtime.hub.subscribe(lambda e: True) as sub:
        result = await runtime.tasks.deploy(
            inputs.Deploy(env.id, "2.0.0", options=fail("apply", 1))
        )
        assert result.value is not None
        async for event in sub:
            seen.append(event)
            if event.kind.is_final:
                break
    stored = await events_of(runtime, result.value.id)
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    assert [(e.id, e.sequence, e.kind, e.status, e.progress) for e in seen] == [
        (e.id, e.sequence, e.kind, e.status, e.progress) for e in stored
    ]


async def test_invariant_4_task_state_equals_its_last_event(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    ids = []
    for version, options in [
        ("1", inputs.TaskOptions()),
        ("2", fail("verify")),
        ("3", fail("plan", 1)),
    ]:
        result = await runtime.tasks.deploy(inputs.Deploy(env.id, version, options=options))
        assert result.value is not None
        ids.append(result.value.id)
    for task in await wait_final(runtime, ids):
        last = (await events_of(runtime, task.id))[-1]
        assert last.sequence == task.last_sequence
        assert (last.status, last.progress) == (task.status, task.progress)
        step_events = [e for e in await events_of(runtime, task.id) if e.step is not None]
        for step in task.steps:
            latest = [e.step for e in step_events if e.step and e.step["index"] == step["index"]]
            if latest and step["status"] != StepStatus.SKIPPED:
                assert latest[-1] == step


async def test_invariant_1_fifo_and_one_running_per_entity(runtime: Runtime) -> None:
    env_a = await make_environment(runtime, "a")
    env_b = await make_environment(runtime, "b")
    ids: dict[str, list[str]] = {env_a.id: [], env_b.id: []}
    for i in range(8):
        for env in (env_a, env_b):
            result = await runtime.tasks.deploy(inputs.Deploy(env.id, f"v{i}"))
            assert result.value is not None
            ids[env.id].append(result.value.id)
    await wait_final(runtime, ids[env_a.id] + ids[env_b.id])
    for task_ids in ids.values():
        previous_end = None
        for task_id in task_ids:
            started = await first(runtime, task_id, EventKind.STARTED)
            completed = await first(runtime, task_id, EventKind.COMPLETED)
            if previous_end is not None:
                assert started.at >= previous_end, "a task started before its predecessor ended"
            previous_end = completed.at
    async with runtime.db.read() as session:
        env = await session.get(Environment, env_a.id)
    assert env is not None and env.current_version == "v7"


async def test_retry_keeps_the_head_of_its_entity_queue(runtime_factory: Any) -> None:
    runtime: Runtime = await runtime_factory(retry_base_delay=0.3)
    env = await make_environment(runtime)
    flaky = await runtime.tasks.deploy(inputs.Deploy(env.id, "1", options=fail("apply", 2)))
    later = await runtime.tasks.deploy(inputs.Deploy(env.id, "2"))
    assert flaky.value is not None and later.value is not None
    flaky_task, later_task = await wait_final(runtime, [flaky.value.id, later.value.id])
    by_id = {t.id: t for t in (flaky_task, later_task)}
    assert by_id[flaky.value.id].status == TaskStatus.COMPLETED
    assert by_id[flaky.value.id].attempt == 3
    kinds = [e.kind for e in await events_of(runtime, flaky.value.id)]
    assert kinds.count(EventKind.RETRY_SCHEDULED) == 2 and kinds.count(EventKind.STARTED) == 3
    flaky_done = await first(runtime, flaky.value.id, EventKind.COMPLETED)
    later_started = await first(runtime, later.value.id, EventKind.STARTED)
    assert later_started.at >= flaky_done.at, "a later task overtook a task waiting out its backoff"


async def test_dead_lettering_releases_the_entity(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    doomed = await runtime.tasks.deploy(inputs.Deploy(env.id, "bad", options=fail("apply")))
    after = await runtime.tasks.deploy(inputs.Deploy(env.id, "good"))
    assert doomed.value is not None and after.value is not None
    tasks = {t.id: t for t in await wait_final(runtime, [doomed.value.id, after.value.id])}
    dead = tasks[doomed.value.id]
    assert dead.status == TaskStatus.FAILED and dead.dead_lettered and dead.attempt == 3
    assert dead.error is not None and "apply" in dead.error
    assert tasks[after.value.id].status == TaskStatus.COMPLETED
    events = await events_of(runtime, doomed.value.id)
    times = [e.at for e in events]
    assert times == sorted(times), [(e.sequence, e.kind, e.at.isoformat()) for e in events]


async def test_permanent_failure_is_not_retried(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    result = await runtime.tasks.deploy(
        inputs.Deploy(env.id, "x", options=fail("plan", permanent=True))
    )
    assert result.value is not None
    [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.FAILED and task.attempt == 1 and task.dead_lettered


async def test_retry_task_goes_to_the_back_with_a_fresh_plan(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    doomed = await runtime.tasks.deploy(inputs.Deploy(env.id, "bad", options=fail("verify", 3)))
    assert doomed.value is not None
    await wait_final(runtime, [doomed.value.id])
    retried = await runtime.tasks.retry(doomed.value.id)
    assert retried.ok and retried.value is not None
    assert retried.value.status == TaskStatus.QUEUED and retried.value.attempt == 1
    assert all(s["status"] == StepStatus.PENDING for s in retried.value.steps)
    assert not retried.value.dead_lettered
    [task] = await wait_final(runtime, [doomed.value.id])
    # failAttempts=3 counts attempts; the fresh attempt 1 fails again, proving attempt reset.
    assert task.status == TaskStatus.FAILED
    again = await runtime.tasks.retry(task.id)
    assert again.ok
    fine = await runtime.tasks.deploy(inputs.Deploy(env.id, "good"))
    assert fine.value is not None
    [done] = await wait_final(runtime, [fine.value.id])
    assert done.status == TaskStatus.COMPLETED
    not_retryable = await runtime.tasks.retry(done.id)
    assert [e.code for e in not_retryable.user_errors] == ["NOT_RETRYABLE"]


async def test_cancel_queued_task_never_starts(runtime_factory: Any) -> None:
    runtime: Runtime = await runtime_factory(step_delay=0.2)
    env = await make_environment(runtime)
    running = await runtime.tasks.deploy(inputs.Deploy(env.id, "1"))
    queued = await runtime.tasks.deploy(inputs.Deploy(env.id, "2"))
    after = await runtime.tasks.deploy(inputs.Deploy(env.id, "3"))
    assert running.value and queued.value and after.value
    cancelled = await runtime.tasks.cancel(queued.value.id)
    assert cancelled.ok and cancelled.value is not None
    assert cancelled.value.status == TaskStatus.CANCELLED
    tasks = {t.id: t for t in await wait_final(runtime, [running.value.id, after.value.id])}
    assert all(t.status == TaskStatus.COMPLETED for t in tasks.values())
    kinds = [e.kind for e in await events_of(runtime, queued.value.id)]
    assert kinds == [EventKind.QUEUED, EventKind.CANCELLED]
    again = await runtime.tasks.cancel(queued.value.id)
    assert [e.code for e in again.user_errors] == ["NOT_CANCELLABLE"]


async def test_cancel_running_task_stops_inside_the_step(runtime_factory: Any) -> None:
    runtime: Runtime = await runtime_factory(step_delay=30.0)
    env = await make_environment(runtime)
    # Subscribed before deploying, so the first STEP_STARTED cannot slip by unseen.
    async with runtime.hub.subscribe(lambda e: True) as sub:
        slow = await runtime.tasks.deploy(inputs.Deploy(env.id, "1"))
        nxt = await runtime.tasks.deploy(inputs.Deploy(env.id, "2"))
        assert slow.value and nxt.value
        async for event in sub:
            if event.task_id == slow.value.id and event.kind == EventKind.STEP_STARTED:
                break
    result = await runtime.tasks.cancel(slow.value.id)
    assert result.ok
    [task] = await wait_final(runtime, [slow.value.id], timeout=10)
    assert task.status == TaskStatus.CANCELLED
    assert all(s["status"] == StepStatus.SKIPPED for s in task.steps)
    # The entity moves on: the next task starts (its 30 s steps are cancelled in turn).
    async with runtime.hub.subscribe(lambda e: e.task_id == nxt.value.id) as sub:  # type: ignore[union-attr]
        async with runtime.db.read() as session:
            status = (await session.get(Task, nxt.value.id)).status  # type: ignore[union-attr]
        if status == TaskStatus.QUEUED:
            async for event in sub:
                if event.kind == EventKind.STARTED:
                    break
    assert (await runtime.tasks.cancel(nxt.value.id)).ok
    await wait_final(runtime, [nxt.value.id], timeout=10)


async def test_a_task_never_starts_before_its_run_after_whatever_the_bus_delivered(
    runtime_factory: Any,
) -> None:
    """The PostgreSQL bus claims from the statement's snapshot, so it can hand over a head
    as it was just before another worker's attempt failed and set its backoff. The worker
    reads the task fresh and waits out a run_after still to come; here the in-process bus
    delivers the task as submitted (no run_after; on SQLite with its submitter's copy of
    the row) after its stored run_after moved on, through the journal as every change."""
    runtime: Runtime = await runtime_factory(run_worker=False)
    env = await make_environment(runtime)
    result = await runtime.tasks.deploy(inputs.Deploy(env.id, "1"))
    assert result.value is not None
    run_after = utcnow() + timedelta(seconds=1.0)
    async with runtime.journal.transaction() as txn:
        moved = await txn.append(
            result.value.id,
            EventKind.LOG,
            Guard({TaskStatus.QUEUED}),
            {"run_after": run_after},
            message="backoff moved on",
        )
        assert moved is not None
    worker = Worker(
        bus=runtime.bus,
        journal=runtime.journal,
        registry=runtime.registry,
        services=runtime.services,
        concurrency=2,
        retry_base_delay=0.1,
    )
    worker.start()
    try:
        [task] = await wait_final(runtime, [result.value.id])
    finally:
        await worker.stop(5.0)
    assert task.status == TaskStatus.COMPLETED
    started = await first(runtime, task.id, EventKind.STARTED)
    assert started.at >= run_after, "started before its run_after"


@pytest.mark.parametrize("runtime_factory", ["sqlite"], indirect=True)
async def test_an_attempt_ending_mid_heartbeat_lets_the_heartbeat_finish(
    runtime_factory: Any,
) -> None:
    """The heartbeat's statements are never cancelled halfway (a cancel inside a statement
    hands the pool a connection still busy with it): an attempt that ends while its
    heartbeat is in flight (one every lease/3 s, here each taking 1 s; the task's three
    steps take about 0.75 s) waits for that heartbeat to finish."""
    runtime: Runtime = await runtime_factory(lease_seconds=1.0, step_delay=0.25)
    heartbeats: list[str] = []
    real = runtime.bus.heartbeat

    async def slow_heartbeat(delivery: Any) -> bool:
        heartbeats.append("started")
        try:
            await asyncio.sleep(1.0)  # a statement that takes its time
        except asyncio.CancelledError:
            heartbeats.append("cancelled")
            raise
        heartbeats.append("finished")
        return await real(delivery)

    runtime.bus.heartbeat = slow_heartbeat  # type: ignore[method-assign]
    result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
    assert result.value is not None
    [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.COMPLETED
    assert heartbeats and heartbeats[0] == "started", heartbeats
    await asyncio.sleep(1.5)  # past the in-flight heartbeat's end
    assert "cancelled" not in heartbeats and heartbeats[-1] == "finished", heartbeats


@pytest.mark.parametrize("runtime_factory", ["sqlite"], indirect=True)
async def test_the_in_process_worker_runs_a_new_task_from_its_submitters_copy(
    runtime_factory: Any,
) -> None:
    """On the embedded default the bus is in this process, and the submitter's copy of
    the task it just committed goes with the message: the worker starts it without
    reading it back (its STARTED is still guarded by the task's version)."""
    runtime: Runtime = await runtime_factory()
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    async with runtime.hub.subscribe(lambda _event: True) as subscription:
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("ns", "web"))
        assert result.value is not None
        kinds = []
        async with asyncio.timeout(30):
            async for stored in subscription:
                kinds.append(stored.kind)
                if stored.kind == EventKind.COMPLETED:
                    break
    assert kinds[0] == EventKind.QUEUED and EventKind.STARTED in kinds
    reads = [s for s in sent if s.startswith("SELECT") and " FROM tasks" in s]
    assert reads == [], f"the worker read the task back: {reads}"
