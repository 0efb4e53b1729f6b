"""Workers sharing one PostgreSQL database: several runtimes, a stalled worker, an outage.

What only the PostgreSQL deployment has: more than one worker process on one database
(here: runtimes in one event loop, each with its own engine and bus, as separate processes
would have), leases that expire when a worker stalls, and a database that restarts under
running workers. Every test runs on PostgreSQL only (``runtime_factory`` param "postgres").
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from cloudops.bus.base import Delivery
from cloudops.bus.postgres import CHANNEL, asyncpg_dsn
from cloudops.db.models import Task
from cloudops.domain import FINAL_STATUSES, EventKind, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.worker import pool
from tests import pg
from tests.conftest import events_of, make_environment

pytestmark = pytest.mark.parametrize("runtime_factory", ["postgres"], indirect=True)


async def wait_final_in_db(runtime: Runtime, task_ids: list[str], timeout: float) -> list[Task]:
    """Wait until every task is final, reading the database: the events of a task run by
    another runtime reach only that runtime's event hub."""
    async with asyncio.timeout(timeout):
        while True:
            async with runtime.db.read() as session:
                rows = await session.execute(select(Task).where(Task.id.in_(task_ids)))
                tasks = list(rows.scalars())
            if len(tasks) == len(task_ids) and all(t.status in FINAL_STATUSES for t in tasks):
                by_id = {t.id: t for t in tasks}
                return [by_id[i] for i in task_ids]
            await asyncio.sleep(0.05)


def count_runs(runtime: Runtime) -> Counter[str]:
    """Count the deliveries the runtime's worker runs, by task id."""
    assert runtime.worker is not None
    counts: Counter[str] = Counter()
    handle = runtime.worker._handle

    async def counting(delivery: Delivery) -> None:
        counts[delivery.message.task_id] += 1
        await handle(delivery)

    runtime.worker._handle = counting  # type: ignore[method-assign]
    return counts


async def test_two_workers_share_the_queue_fifo_and_one_running_per_entity(
    runtime_factory: Callable[..., Any],
) -> None:
    # One task at a time per worker: with three busy entities, both workers must take part.
    one: Runtime = await runtime_factory(worker_concurrency=1, step_delay=0.02)
    two: Runtime = await runtime_factory(worker_concurrency=1, step_delay=0.02)
    ran = {"one": count_runs(one), "two": count_runs(two)}
    envs = [await make_environment(one, f"e{i}") for i in range(3)]
    queues: dict[str, list[str]] = {env.id: [] for env in envs}
    for version in range(3):
        for env in envs:
            result = await one.tasks.deploy(inputs.Deploy(env.id, f"v{version}"))
            assert result.value is not None, result.user_errors
            queues[env.id].append(result.value.id)
    ids = [task_id for queue in queues.values() for task_id in queue]
    tasks = await wait_final_in_db(one, ids, timeout=60)

    assert all(t.status == TaskStatus.COMPLETED and t.attempt == 1 for t in tasks), [
        (t.id, t.status, t.attempt, t.error) for t in tasks
    ]
    received = ran["one"] + ran["two"]
    assert all(received[i] == 1 for i in ids), f"not run exactly once: {received}"
    assert ran["one"] and ran["two"], f"both workers should have run tasks: {ran}"
    for env_id, queue in queues.items():
        previous_end = None
        for task_id in queue:
            events = await events_of(one, task_id)
            started = next(e.at for e in events if e.kind == EventKind.STARTED)
            ended = next(e.at for e in events if e.kind == EventKind.COMPLETED)
            if previous_end is not None:
                assert started >= previous_end, (
                    f"{task_id} on {env_id} started before its predecessor completed"
                )
            previous_end = ended


async def test_a_stalled_workers_task_is_taken_over_as_its_next_attempt(
    runtime_factory: Callable[..., Any],
) -> None:
    # The first worker starts a long step, then stalls: its heartbeats stop renewing the
    # lease (a frozen process, a partition). The second worker takes the task over.
    stalled: Runtime = await runtime_factory(step_delay=30.0, lease_seconds=1.0, shutdown_grace=0.1)
    env = await make_environment(stalled)
    result = await stalled.tasks.deploy(inputs.Deploy(env.id, "1"))
    assert result.value is not None
    task_id = result.value.id
    async with stalled.hub.subscribe(lambda e: e.task_id == task_id) as sub:
        async for event in sub:
            if event.kind == EventKind.STEP_STARTED:
                break

    async def frozen(_delivery: Delivery) -> bool:
        return True  # believes it still holds the lease, renews nothing

    stalled.bus.heartbeat = frozen  # type: ignore[method-assign,assignment]
    await stalled.bus.close()  # and it receives nothing more (its attempt runs on)
    taker: Runtime = await runtime_factory(lease_seconds=1.0)
    [task] = await wait_final_in_db(taker, [task_id], timeout=20)
    assert task.status == TaskStatus.COMPLETED, (task.status, task.error)
    assert task.attempt == 2, f"the takeover must run attempt 2, not {task.attempt}"

    # The stalled worker stops (interrupting its attempt): its writes are fenced off.
    await stalled.stop()
    async with taker.db.read() as session:
        after = await session.get(Task, task_id)
    assert after is not None and after.status == TaskStatus.COMPLETED and after.attempt == 2
    events = await events_of(taker, task_id)
    kinds = [e.kind for e in events]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert kinds.count(EventKind.STARTED) == 2 and kinds.count(EventKind.COMPLETED) == 1, kinds
    assert kinds[-1] == EventKind.COMPLETED, f"a write after completion: {kinds}"
    lost = [e for e in events if e.kind == EventKind.RETRY_SCHEDULED]
    assert len(lost) == 1 and "lost its lease" in (lost[0].message or ""), [
        (e.kind, e.message) for e in events
    ]


@pytest.fixture
def refuse_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, bool], None]]:
    """``refuse(database, on)``: while on, new connections to ``database`` fail the way
    they do while a PostgreSQL server restarts ("the database system is shutting down")."""
    real_connect = asyncpg.connect
    refused: set[str] = set()

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        target = f"{args} {kwargs}"
        if any(name in target for name in refused):
            raise asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
        return await real_connect(*args, **kwargs)

    def refuse(database: str, on: bool) -> None:
        (refused.add if on else refused.discard)(database)

    monkeypatch.setattr(asyncpg, "connect", connect)
    yield refuse


@pytest.mark.parametrize("restart", [False, True], ids=["connections-dropped", "server-restart"])
async def test_worker_keeps_receiving_after_the_database_drops_its_connections(
    runtime_factory: Callable[..., Any],
    refuse_connections: Callable[[str, bool], None],
    restart: bool,
) -> None:
    runtime: Runtime = await runtime_factory()
    env = await make_environment(runtime)
    warm_up = await runtime.tasks.deploy(inputs.Deploy(env.id, "1"))
    assert warm_up.value is not None
    await wait_final_in_db(runtime, [warm_up.value.id], timeout=15)

    database = pg.database_name(runtime.settings.database_url)
    admin = await asyncpg.connect(pg.ADMIN_DSN)
    try:
        # Every connection of the runtime is dropped; on a restart, reconnecting is
        # refused for a while (longer than the bus's 0.2s poll).
        refuse_connections(database, restart)
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            database,
        )
        await asyncio.sleep(1.5)
        refuse_connections(database, False)
    finally:
        await admin.close()

    result = None
    for _ in range(50):  # the API side may see the outage's tail too: retry the request
        try:
            result = await runtime.tasks.deploy(inputs.Deploy(env.id, "2"))
            break
        except Exception:
            await asyncio.sleep(0.1)
    assert result is not None and result.value is not None
    loop = runtime.worker._loop_task if runtime.worker else None
    try:
        [task] = await wait_final_in_db(runtime, [result.value.id], timeout=10)
    except TimeoutError:
        died = loop is not None and loop.done() and not loop.cancelled()
        cause = repr(loop.exception()) if died and loop is not None else "still running"
        pytest.fail(
            "BUG: a task queued after the database came back never ran: the worker stopped "
            f"receiving (its receive loop: {cause}). PostgresSessionBus.receive() retries "
            "only errors whose text contains 'connection'; 'the database system is shutting "
            "down' (and '... is starting up') of a server restart is re-raised and ends "
            "Worker._receive_loop for good.",
            pytrace=False,
        )
    assert task.status == TaskStatus.COMPLETED


async def test_a_cancel_from_an_api_process_stops_a_step_running_in_a_worker_process(
    runtime_factory: Callable[..., Any],
) -> None:
    # The step sleeps 15 s before its first progress write (the worker's next look at the
    # stored cancel flag) and the lease heartbeat comes only every 40 s: a cancel that ends
    # the task with no STEP_PROGRESS at all came through the cross-process signal.
    worker: Runtime = await runtime_factory(step_delay=60.0, lease_seconds=120.0)
    api: Runtime = await runtime_factory(run_worker=False)
    env = await make_environment(api)
    async with worker.hub.subscribe(lambda e: e.kind == EventKind.STEP_STARTED) as sub:
        submitted = await api.tasks.deploy(inputs.Deploy(env.id, "1"))
        assert submitted.value is not None, submitted.user_errors
        async for event in sub:
            if event.task_id == submitted.value.id:
                break
    result = await api.tasks.cancel(submitted.value.id)
    assert result.ok, result.user_errors
    [task] = await wait_final_in_db(api, [submitted.value.id], timeout=20)
    assert task.status == TaskStatus.CANCELLED, (task.status, task.error)
    assert all(step["status"] == "SKIPPED" for step in task.steps), task.steps
    kinds = [e.kind for e in await events_of(api, task.id)]
    assert EventKind.STEP_PROGRESS not in kinds, (
        f"the worker noticed the cancel only at its next write, not by the signal: {kinds}"
    )


class Notifications:
    """Counts the bus's wake-ups (NOTIFY on its channel) in the runtime's database."""

    def __init__(self) -> None:
        self.count = 0
        self._conn: asyncpg.Connection | None = None

    async def listen(self, runtime: Runtime) -> None:
        self._conn = await asyncpg.connect(asyncpg_dsn(runtime.db.url))
        await self._conn.add_listener(CHANNEL, self._heard)

    def _heard(self, *_args: Any) -> None:
        self.count += 1

    async def settled(self) -> int:
        assert self._conn is not None
        await self._conn.execute("SELECT 1")  # what was sent before has arrived
        await asyncio.sleep(0.2)
        return self.count

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def submit_restarts(runtime: Runtime, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        result = await runtime.tasks.restart_workload(inputs.RestartWorkload("default", "web"))
        assert result.value is not None, result.user_errors
        ids.append(result.value.id)
    return ids


async def wait_running(runtime: Runtime, task_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            async with runtime.db.read() as session:
                task = await session.get(Task, task_id)
            if task is not None and task.status == TaskStatus.RUNNING:
                return
            await asyncio.sleep(0.02)


async def test_a_last_write_releases_quietly_and_its_worker_takes_the_next_task_at_once(
    runtime_factory: Callable[..., Any],
) -> None:
    """The statement that ends a task releases its session without a NOTIFY (which would
    wake every worker for one task); the worker that released it claims again at once.
    Polls are 30 s apart here: only a wake-up can make the queue move within the test."""
    worker: Runtime = await runtime_factory(bus_poll_interval=30.0, step_delay=0.1)
    heard = Notifications()
    await heard.listen(worker)
    try:
        [first] = await submit_restarts(worker, 1)
        await wait_running(worker, first)
        rest = await submit_restarts(worker, 2)  # behind a held session: no NOTIFY either
        tasks = await wait_final_in_db(worker, [first, *rest], timeout=10)
        assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 3
        assert await heard.settled() == 1, "only the first submission, to a free session, wakes"
    finally:
        await heard.close()


async def test_a_stopping_worker_wakes_the_others_for_the_session_its_last_write_released(
    runtime_factory: Callable[..., Any],
) -> None:
    """A worker that no longer receives cannot claim the entity's next task itself: the
    release of an attempt it lets finish while it stops wakes the other workers."""
    leaving: Runtime = await runtime_factory(bus_poll_interval=30.0, step_delay=0.3)
    [first] = await submit_restarts(leaving, 1)
    await wait_running(leaving, first)
    staying: Runtime = await runtime_factory(bus_poll_interval=30.0, step_delay=0.0)
    await asyncio.sleep(0.3)  # its first claim found nothing: it waits for a wake-up
    [second] = await submit_restarts(staying, 1)  # behind the held session: no NOTIFY
    await leaving.stop()  # lets the running attempt finish (grace 2 s)
    first_task, second_task = await wait_final_in_db(staying, [first, second], timeout=10)
    assert first_task.status == second_task.status == TaskStatus.COMPLETED
    assert first_task.attempt == second_task.attempt == 1


async def test_a_retrys_quiet_release_wakes_every_worker(
    runtime_factory: Callable[..., Any],
) -> None:
    """A retry leaves its task at the head until its backoff ends; its release wakes every
    worker (their claims find nothing and say when it is due), not only the process that
    ran it, which could have filled its slots by then. A task's completion, by contrast,
    wakes nobody: its worker claims again itself."""
    worker: Runtime = await runtime_factory(bus_poll_interval=30.0, retry_base_delay=0.2)
    env = await make_environment(worker)
    heard = Notifications()
    await heard.listen(worker)
    try:
        flaky = inputs.TaskOptions(metadata={"simulate": {"failStep": "apply", "failAttempts": 1}})
        result = await worker.tasks.deploy(inputs.Deploy(env.id, "1", options=flaky))
        assert result.value is not None, result.user_errors
        [task] = await wait_final_in_db(worker, [result.value.id], timeout=20)
        assert task.status == TaskStatus.COMPLETED and task.attempt == 2, (task.status, task.error)
        # The submission (to a free session) and the retry's release; not the completion.
        assert await heard.settled() == 2
    finally:
        await heard.close()


async def wake_workers(runtime: Runtime) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(runtime.db.url))
    try:
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    finally:
        await conn.close()


class Psql:
    """A psql session driven line by line without the event loop, so that the test can
    act on the database while the loop is held still."""

    def __init__(self, runtime: Runtime) -> None:
        self._process = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", asyncpg_dsn(runtime.db.url)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, sql: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(sql + "\n")
        self._process.stdin.flush()

    def value(self, query: str) -> str:
        """The one value a query returns (blocking)."""
        assert self._process.stdout is not None
        self.run(query)
        return self._process.stdout.readline().strip()

    def close(self) -> None:
        self._process.communicate(timeout=10)  # closes its input: psql ends


async def taken_at_once_by_a_new_worker(runtime_factory: Callable[..., Any], task_id: str) -> None:
    """A new worker runs the task as its attempt 1, well within the 30 s lease: only a
    free session lets it."""
    staying: Runtime = await runtime_factory(bus_poll_interval=30.0)
    [task] = await wait_final_in_db(staying, [task_id], timeout=10)
    assert task.status == TaskStatus.COMPLETED and task.attempt == 1, (task.status, task.error)


async def test_a_worker_stopping_while_its_claim_is_answered_hands_the_session_back(
    runtime_factory: Callable[..., Any],
) -> None:
    """Stopping does not cancel a claim under way: PostgreSQL may have committed it, and
    its answer, with the lease it took, would be lost. (Cancelled, as stop() once did, the
    session stayed leased to the stopped worker until the lease expired, 30 s here, and
    its entity's queue stood still.) The claim is answered, handed back, and the next
    worker takes the task at once."""
    api: Runtime = await runtime_factory(run_worker=False)
    [task_id] = await submit_restarts(api, 1)
    holder = Psql(api)
    try:
        # Held elsewhere at first: the worker's first claim finds nothing (and prepares
        # its statement), then waits for a wake-up.
        held = "UPDATE bus_sessions SET owner = 'elsewhere', lease_until = now() + '1h'"
        assert holder.value(f"{held}; SELECT 1;") == "1"  # done before the worker starts
        # One pooled connection: the claim runs where its first run prepared it, so below
        # it waits for the lock to execute, not to be prepared.
        leaving: Runtime = await runtime_factory(
            bus_poll_interval=30.0, lease_seconds=30.0, db_pool_size=1
        )
        assert leaving.worker is not None
        # Once more at rest (at start the pool may lend it a second connection), woken
        # from outside (woken by its own NOTIFY, it would claim on a second one as well).
        await asyncio.sleep(0.3)
        await wake_workers(api)
        await asyncio.sleep(0.3)
        # Freed, but not yet committed, under a lock the next claim waits for.
        freed = "UPDATE bus_sessions SET owner = NULL, lease_until = NULL"
        assert (
            holder.value(f"BEGIN; LOCK TABLE bus_sessions IN EXCLUSIVE MODE; {freed}; SELECT 1;")
            == "1"
        )
        await wake_workers(api)
        claim = await pg.claim_waiting_for_a_lock(leaving.db.url)
        # stop() begins while the claim waits: its first step (which cancelled the receive
        # loop, once) runs before this coroutine goes on.
        stopping = asyncio.ensure_future(leaving.worker.stop(leaving.settings.shutdown_grace))
        await asyncio.sleep(0)
        assert not leaving.worker._receiving, "stop() has not begun"
        # From here the event loop stands still: a cancel could not reach PostgreSQL, which
        # commits the claim and sends its answer. Whatever stop() did to the receive loop
        # takes effect only after that.
        holder.run("COMMIT;")
        deadline = time.monotonic() + 10
        while holder.value(f"SELECT state FROM pg_stat_activity WHERE pid = {claim};") != "idle":
            assert time.monotonic() < deadline, "the claim was not answered"
            time.sleep(0.01)  # noqa: ASYNC251 (the loop must not run)
        await asyncio.wait_for(stopping, 10)
        owner = holder.value("SELECT coalesce(owner, 'free') FROM bus_sessions;")
        assert owner == "free", f"the session stays leased to the stopped worker ({owner})"
    finally:
        holder.close()
    await taken_at_once_by_a_new_worker(runtime_factory, task_id)


async def test_a_stopping_worker_whose_claim_gets_no_answer_still_stops(
    runtime_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that does not end (here: it waits for a lock held elsewhere; a database that
    does not answer looks the same) is cancelled after RECEIVE_STOP_WAIT all the same, and
    PostgreSQL abandons it: the session stays free for the next worker."""
    monkeypatch.setattr(pool, "RECEIVE_STOP_WAIT", 0.5)
    api: Runtime = await runtime_factory(run_worker=False)
    [task_id] = await submit_restarts(api, 1)
    holder = Psql(api)
    try:
        assert holder.value("BEGIN; LOCK TABLE bus_sessions IN EXCLUSIVE MODE; SELECT 1;") == "1"
        leaving: Runtime = await runtime_factory(bus_poll_interval=30.0)
        assert leaving.worker is not None
        await pg.claim_waiting_for_a_lock(leaving.db.url)
        async with asyncio.timeout(10) as stopping:
            await leaving.worker.stop(leaving.settings.shutdown_grace)
        assert not stopping.expired(), "stop() waited for the claim"
        deadline = time.monotonic() + 10
        while await pg.claims_waiting_for_a_lock(
            leaving.db.url
        ):  # PostgreSQL hears of the cancel, too
            assert time.monotonic() < deadline, "the claim still waits on the server"
            await asyncio.sleep(0.02)
        holder.run("COMMIT;")
        owner = holder.value("SELECT coalesce(owner, 'free') FROM bus_sessions;")
        assert owner == "free", f"the abandoned claim leased the session to {owner}"
    finally:
        holder.close()
    await taken_at_once_by_a_new_worker(runtime_factory, task_id)
