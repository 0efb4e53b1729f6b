"""Contract suite every :class:`~cloudops.bus.base.SessionBus` implementation must pass.

Each test names the guarantee of ``cloudops.bus.base`` it checks. The suite runs once per
implementation in ``IMPLEMENTATIONS``; to add one, append its name there and add a branch
to :func:`open_bus`.

"postgres" is :class:`~cloudops.bus.postgres.PostgresSessionBus` on a fresh PostgreSQL
database per test (per example in the property test), driven through :class:`TaskTableBus`,
which plays the part that the service layer and the worker play around that bus (its queue
is the tasks table). The tests at the end of the module are about what only a shared,
leased bus has: several workers on one database, expiring leases, NOTIFY wake-ups.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from cloudops.bus import memory as memory_bus
from cloudops.bus.base import BusClosed, Delivery, SessionBus, TaskMessage
from cloudops.bus.memory import InMemorySessionBus
from cloudops.bus.postgres import PostgresSessionBus, asyncpg_dsn
from cloudops.db.engine import Database
from cloudops.db.models import DEFAULT_ORGANIZATION_ID, BusSession, Task
from cloudops.db.types import utcnow
from cloudops.domain import TaskStatus
from tests import pg

IMPLEMENTATIONS = ["memory", "postgres"]

#: Generous bound for things that must happen "eventually" (never a timing assertion).
WAIT = 2.0
#: How long to wait before concluding that nothing is receivable. A claim on PostgreSQL is
#: a few round trips, so it gets longer (but shorter than ``DEFER_DELAY``).
QUIET = {"memory": 0.05, "postgres": 0.15}
#: The same, in the property test (many examples, so kept shorter).
QUIET_PROPERTY = {"memory": 0.01, "postgres": 0.05}
#: Examples of the property test (a PostgreSQL example makes a database and many queries).
EXAMPLES = {"memory": 150, "postgres": 20}
#: Hypothesis phases of the property test: a PostgreSQL example takes about a second (a
#: database of its own), too slow to shrink a failure within minutes, so a failing example
#: is reported as generated (the failed assertion still names the operation and the model).
PHASES = {
    "memory": tuple(Phase),
    "postgres": (Phase.explicit, Phase.reuse, Phase.generate),
}
#: Backoff used for deferrals that must still be pending during the test.
DEFER_DELAY = timedelta(seconds=0.3)
#: The PostgreSQL bus of the shared suite polls this rarely: longer than ``WAIT``, so a
#: test passes only if NOTIFY (not the safety-net poll) wakes the receiver.
POSTGRES_POLL = 10.0


@contextlib.asynccontextmanager
async def open_bus(impl: str) -> AsyncIterator[SessionBus]:
    """A fresh, empty bus of the named implementation; closed on exit."""
    if impl == "postgres":
        async with postgres_buses(1) as (adapter,):
            yield adapter
        return
    bus: SessionBus
    if impl == "memory":
        bus = InMemorySessionBus()
    else:  # pragma: no cover - guards against a param without a factory branch
        raise ValueError(f"unknown SessionBus implementation: {impl}")
    try:
        yield bus
    finally:
        await bus.close()


def quiet(bus: SessionBus) -> float:
    return QUIET[bus.name]


# -- PostgreSQL: the tasks table is the queue -----------------------------------------

#: ``queue_seq`` is unique over all tasks, but the suite numbers messages per session
#: (a1 and b1 both have order 1): a message's row gets ``order * SLOTS + <session slot>``,
#: which keeps every session's order and is mapped back on receive.
SLOTS = 1000


class TaskTableBus:
    """A :class:`PostgresSessionBus` with the task rows that the service layer and the
    worker write around it in production (the bus itself only claims, fences and wakes):

    * ``publish`` inserts the message's task row (QUEUED, ``queue_seq`` from its order,
      ``entity_id`` = session, ``run_after``) unless a row with its id exists, as
      ``TaskService`` does in the transaction before publishing; a duplicate is ignored;
    * ``receive`` marks the received row RUNNING (the worker's STARTED);
    * ``complete`` marks it COMPLETED, ``defer`` QUEUED with ``run_after`` (the retry
      transition), ``release`` QUEUED (an interrupted attempt), each *before* handing the
      session back, and each a fenced write, like the worker's journal ``Guard``: only
      while the delivery's (owner, fence) still holds the session, so that everything
      done through a stale delivery is a no-op;
    * ``remove`` is ``TaskService.cancel``: it marks the row CANCELLED if it is still
      QUEUED, and only then calls ``bus.remove`` and returns its answer. This order is the
      one ``PostgresSessionBus.remove`` is written for ("the caller has marked the task
      CANCELLED, so no claim will return it"); asking the bus first would let a worker
      claim the still-QUEUED row between the bus's answer and the cancel. A row that is
      not QUEUED (RUNNING = in flight, final, or no row at all = unknown) is not
      removable, as for the service, and the bus is not asked.
    """

    name = "postgres"

    def __init__(
        self, db: Database, bus: PostgresSessionBus, slots: dict[str, int] | None = None
    ) -> None:
        self.db = db
        self.bus = bus
        #: Session -> slot, shared by every adapter on one database.
        self.slots: dict[str, int] = {} if slots is None else slots

    # -- the rows ---------------------------------------------------------------------
    def queue_seq(self, message: TaskMessage) -> int:
        slot = self.slots.setdefault(message.session_id, len(self.slots))
        assert slot < SLOTS and 0 <= message.order < 2**40
        return message.order * SLOTS + slot

    async def insert_row(self, message: TaskMessage) -> None:
        """The task row of ``message`` (QUEUED), unless its id exists."""
        now = utcnow()
        row: dict[str, Any] = {
            "id": message.task_id,
            "organization_id": DEFAULT_ORGANIZATION_ID,
            "type": "DEPLOYMENT",
            "status": TaskStatus.QUEUED.value,
            "entity_id": message.session_id,
            "input_hash": "x",
            "attempt": 1,
            "max_attempts": 3,
            "run_after": message.run_after,
            "steps": [],
            "input": {},
            "meta": {},
            "queue_seq": self.queue_seq(message),
            "last_sequence": 0,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as session:
            await session.execute(insert(Task).values(**row).on_conflict_do_nothing())

    async def status(self, task_id: str) -> str | None:
        async with self.db.read() as session:
            return await session.scalar(select(Task.status).where(Task.id == task_id))

    async def _fenced(
        self, delivery: Delivery, expected: Collection[TaskStatus], **values: Any
    ) -> bool:
        """Update the delivery's row if its status is expected and the delivery still
        holds the session (the journal's ``Guard`` with a lease)."""
        lease = delivery.lease
        assert lease is not None, "a PostgreSQL delivery carries its lease"
        async with self.db.write() as session:
            result = await session.execute(
                update(Task)
                .where(
                    Task.id == delivery.message.task_id,
                    Task.status.in_([s.value for s in expected]),
                    exists().where(
                        BusSession.entity_id == lease.entity_id,
                        BusSession.owner == lease.owner,
                        BusSession.fence == lease.fence,
                    ),
                )
                .values(updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _translate(self, delivery: Delivery) -> Delivery:
        """The bus reports ``queue_seq`` as the order: map it back to the message's."""
        got = delivery.message
        order, slot = divmod(got.order, SLOTS)
        assert self.slots.get(got.session_id) == slot, f"{got} is not in its session's slot"
        message = TaskMessage(got.task_id, got.session_id, order, got.run_after)
        return Delivery(message, delivery.fence, delivery.lease)

    # -- the SessionBus interface -----------------------------------------------------------
    async def publish(self, message: TaskMessage) -> None:
        await self.insert_row(message)
        await self.bus.publish(message)

    async def receive(self) -> Delivery:
        delivery = self._translate(await self.bus.receive())
        # The worker hands a delivery to its run without awaiting anything in between; so
        # that the extra write here adds no window in which a cancel (a wait_for timing
        # out) loses a claimed session, a cancel now hands the session back first.
        start = asyncio.ensure_future(
            self._fenced(delivery, {TaskStatus.QUEUED}, status=TaskStatus.RUNNING.value)
        )
        try:
            await asyncio.shield(start)
        except asyncio.CancelledError:
            await start
            await self.release(delivery)
            raise
        return delivery

    async def complete(self, delivery: Delivery) -> None:
        await self._fenced(
            delivery,
            {TaskStatus.RUNNING},
            status=TaskStatus.COMPLETED.value,
            finished_at=utcnow(),
        )
        await self.bus.complete(delivery)

    async def defer(self, delivery: Delivery, run_after: datetime) -> None:
        await self._fenced(
            delivery, {TaskStatus.RUNNING}, status=TaskStatus.QUEUED.value, run_after=run_after
        )
        await self.bus.defer(delivery, run_after)

    async def release(self, delivery: Delivery) -> None:
        await self._fenced(delivery, {TaskStatus.RUNNING}, status=TaskStatus.QUEUED.value)
        await self.bus.release(delivery)

    async def remove(self, task_id: str, session_id: str) -> bool:
        async with self.db.write() as session:
            cancelled = await session.execute(
                update(Task)
                .where(
                    Task.id == task_id,
                    Task.entity_id == session_id,
                    Task.status == TaskStatus.QUEUED.value,
                )
                .values(
                    status=TaskStatus.CANCELLED.value,
                    run_after=None,
                    finished_at=utcnow(),
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        if not cancelled.rowcount:  # type: ignore[attr-defined]
            return False
        return await self.bus.remove(task_id, session_id)

    async def holds(self, delivery: Delivery) -> bool:
        return await self.bus.holds(delivery)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self.bus.on_cancel(callback)

    async def request_cancel(self, task_id: str) -> None:
        await self.bus.request_cancel(task_id)

    async def heartbeat(self, delivery: Delivery) -> bool:
        return await self.bus.heartbeat(delivery)

    async def stop_receiving(self) -> None:
        await self.bus.stop_receiving()

    async def close(self) -> None:
        await self.bus.close()


@contextlib.asynccontextmanager
async def postgres_buses(
    workers: int, *, lease_seconds: float = 30.0, poll_interval: float = POSTGRES_POLL
) -> AsyncIterator[tuple[TaskTableBus, ...]]:
    """``workers`` buses on one fresh database, each with its own engine (as separate
    worker processes would have); closed, and the database dropped, on exit."""
    url = await pg.fresh_database()  # fails, saying why, without PostgreSQL
    slots: dict[str, int] = {}
    buses: list[TaskTableBus] = []
    try:
        for _ in range(workers):
            db = Database(url)
            bus = PostgresSessionBus(db, lease_seconds=lease_seconds, poll_interval=poll_interval)
            buses.append(TaskTableBus(db, bus, slots))
        yield tuple(buses)
    finally:
        for adapter in buses:
            await adapter.close()
            await adapter.db.dispose()
        await pg.drop_database(url)


@pytest.fixture(params=IMPLEMENTATIONS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[SessionBus]:
    async with open_bus(request.param) as bus:
        yield bus


# -- helpers ----------------------------------------------------------------------------


def msg(session: str, order: int, run_after: datetime | None = None) -> TaskMessage:
    return TaskMessage(f"{session}{order}", session, order, run_after)


async def recv(bus: SessionBus) -> Delivery:
    """Receive, failing (instead of hanging) when nothing arrives within ``WAIT``."""
    try:
        return await asyncio.wait_for(bus.receive(), WAIT)
    except TimeoutError:
        pytest.fail(f"receive() returned nothing within {WAIT}s although a message was due")


async def assert_nothing_receivable(bus: SessionBus, why: str) -> None:
    try:
        delivery = await asyncio.wait_for(bus.receive(), quiet(bus))
    except TimeoutError:
        return
    pytest.fail(f"{why}; but receive() returned {delivery.message}")


async def drain(bus: SessionBus) -> list[str]:
    """Receive and complete until the bus is quiet; the task ids in receive order."""
    seen: list[str] = []
    while True:
        try:
            delivery = await asyncio.wait_for(bus.receive(), quiet(bus))
        except TimeoutError:
            return seen
        seen.append(delivery.message.task_id)
        await bus.complete(delivery)


# -- guarantee 1: FIFO by ``order`` per session ------------------------------------------


async def test_fifo_per_session(bus: SessionBus) -> None:
    for order in (3, 1, 2):
        await bus.publish(msg("a", order))
    received = []
    for _ in range(3):
        delivery = await recv(bus)
        received.append(delivery.message.order)
        await bus.complete(delivery)
    assert received == [1, 2, 3]
    await assert_nothing_receivable(bus, "all messages were completed")


async def test_fifo_after_release_with_lower_orders(bus: SessionBus) -> None:
    # a5 is in flight while a1 arrives; a5 is released (nothing in flight), then a0 arrives.
    # Once nothing is in flight the queue is received by ``order``.
    await bus.publish(msg("a", 5))
    held = await recv(bus)
    await bus.publish(msg("a", 1))
    await bus.release(held)
    await bus.publish(msg("a", 0))
    received = []
    for _ in range(3):
        delivery = await recv(bus)
        received.append(delivery.message.order)
        await bus.complete(delivery)
    assert received == [0, 1, 5], f"session queue out of order after release: {received}"


async def test_fifo_lower_order_published_while_in_flight(bus: SessionBus) -> None:
    # The in-flight message is not overtaken, but the next one is again the lowest order.
    await bus.publish(msg("a", 5))
    await bus.publish(msg("a", 6))
    held = await recv(bus)
    await bus.publish(msg("a", 1))
    await assert_nothing_receivable(bus, "a5 is in flight")
    assert await bus.remove("a5", "a") is False, "a5 is in flight, though no longer the lowest"
    assert await bus.holds(held)
    await bus.complete(held)
    assert await drain(bus) == ["a1", "a6"]


async def test_remove_lower_order_published_while_in_flight(bus: SessionBus) -> None:
    # a5 is in flight when a1 arrives: a1 is queued (it runs next), not in flight.
    await bus.publish(msg("a", 5))
    held = await recv(bus)
    await bus.publish(msg("a", 1))
    assert await bus.remove("a1", "a") is True, (
        "a1 is queued, not in flight (a5 is the held one): remove() must drop it and "
        "return True, although a1 has the lowest order of its session"
    )
    assert await bus.holds(held), "removing a1 must not touch the in-flight a5"
    await bus.complete(held)
    await assert_nothing_receivable(bus, "a1 was removed and a5 completed")


# -- cancel signals ------------------------------------------------------------------


async def test_request_cancel_reaches_every_cancel_callback(bus: SessionBus) -> None:
    heard: list[tuple[str, str]] = []
    bus.on_cancel(lambda task_id: heard.append(("first", task_id)))
    bus.on_cancel(lambda task_id: heard.append(("second", task_id)))
    await bus.request_cancel("a1")
    # This process's own callbacks are called before request_cancel returns: the worker
    # beside the API that cancelled must not wait for a round trip.
    assert {("first", "a1"), ("second", "a1")} <= set(heard), heard


# -- guarantee 2: one message in flight per session ---------------------------------------


async def test_one_in_flight_per_session(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    head = await recv(bus)
    assert head.message == msg("a", 1)

    await assert_nothing_receivable(bus, "a1 is in flight, so a2 must wait")

    # Receive itself still works: another session's message is delivered meanwhile.
    await bus.publish(msg("b", 1))
    other = await recv(bus)
    assert other.message == msg("b", 1)
    await assert_nothing_receivable(bus, "a1 is still in flight, so a2 must still wait")

    await bus.complete(head)
    nxt = await recv(bus)
    assert nxt.message == msg("a", 2)


async def test_sessions_in_parallel(bus: SessionBus) -> None:
    for session in ("a", "b", "c"):
        await bus.publish(msg(session, 1))
    deliveries = [await recv(bus) for _ in range(3)]
    assert sorted(d.message.session_id for d in deliveries) == ["a", "b", "c"]
    # Fences are per session: the PostgreSQL bus numbers them per entity (its lease names
    # the entity), the in-process bus globally. Either way a fence is never reused within
    # a session (see test_release_makes_head_receivable_again and the property test).
    for delivery in deliveries:
        assert await bus.holds(delivery), f"{delivery.message} should be held"


async def test_complete_releases_next(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    first = await recv(bus)
    assert first.message == msg("a", 1)
    await bus.complete(first)
    assert not await bus.holds(first)
    second = await recv(bus)
    assert second.message == msg("a", 2)
    await bus.complete(second)
    await assert_nothing_receivable(bus, "a1 and a2 were completed")


async def test_release_makes_head_receivable_again(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    first = await recv(bus)
    await bus.release(first)
    again = await recv(bus)
    assert again.message == msg("a", 1), "release must not remove the head"
    assert again.fence != first.fence
    await bus.complete(again)
    assert (await recv(bus)).message == msg("a", 2)


async def test_stale_delivery_is_fenced(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    old = await recv(bus)
    assert await bus.holds(old)
    await bus.release(old)
    assert not await bus.holds(old)

    new = await recv(bus)
    assert new.message == msg("a", 1)
    assert new.fence != old.fence, "a new receive must get a new fence"
    assert not await bus.holds(old)
    assert await bus.holds(new)

    # Every operation through the stale delivery is a no-op.
    await bus.complete(old)
    await bus.defer(old, datetime.now(UTC) - timedelta(seconds=1))
    await bus.release(old)
    assert await bus.holds(new), "the stale delivery must not unlock the new holder"
    assert not await bus.holds(old)
    await assert_nothing_receivable(bus, "a1 is still held through the new delivery")

    await bus.complete(new)
    assert (await recv(bus)).message == msg("a", 2), "a1 must have been completed once only"


# -- guarantee 3: a deferred message stays at the head ------------------------------------


async def test_defer_keeps_head(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    first = await recv(bus)
    run_after = datetime.now(UTC) + DEFER_DELAY
    await bus.defer(first, run_after)
    assert not await bus.holds(first)

    # Other sessions are unaffected, and a2 does not overtake the deferred a1.
    await bus.publish(msg("b", 1))
    other = await recv(bus)
    assert other.message == msg("b", 1), f"expected b1, got {other.message}"
    await bus.complete(other)
    try:
        early: Delivery | None = await asyncio.wait_for(bus.receive(), quiet(bus))
    except TimeoutError:
        early = None
    assert early is None or early.message.task_id == "a1", (
        f"a1 is deferred and stays at the head, but {early and early.message} was received"
    )

    # No further publish: the backoff timer alone must make a1 receivable again.
    again = early or await recv(bus)
    assert again.message.task_id == "a1"
    assert again.fence != first.fence
    await bus.complete(again)
    assert (await recv(bus)).message == msg("a", 2)


async def test_defer_in_the_past_is_receivable_at_once(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    first = await recv(bus)
    await bus.defer(first, datetime.now(UTC) - timedelta(seconds=1))
    again = await recv(bus)
    assert again.message.task_id == "a1"


async def test_published_with_future_run_after_waits(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1, run_after=datetime.now(UTC) + DEFER_DELAY))
    await bus.publish(msg("a", 2))
    first = await recv(bus)
    assert first.message.task_id == "a1", "a2 must wait for the not-yet-due head a1"


async def test_removing_deferred_head_unblocks_session(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 2))
    first = await recv(bus)
    await bus.defer(first, datetime.now(UTC) + timedelta(minutes=5))
    assert await bus.remove("a1", "a") is True, "a deferred head is queued, not in flight"
    nxt = await recv(bus)
    assert nxt.message == msg("a", 2), "a2 must not keep waiting for the removed a1"


# -- guarantee 4: nothing is lost until completed or removed -------------------------------


async def test_remove_queued(bus: SessionBus) -> None:
    for order in (1, 2, 3):
        await bus.publish(msg("a", order))
    head = await recv(bus)
    assert head.message == msg("a", 1)

    assert await bus.remove("a1", "a") is False, "the in-flight head cannot be removed"
    assert await bus.remove("a2", "a") is True, (
        "a2 is queued behind the in-flight a1, not in flight itself: remove() must drop it "
        "and return True (base.SessionBus.remove: False only when in flight or unknown)"
    )
    assert await bus.remove("a2", "a") is False, "already removed"
    assert await bus.remove("a9", "a") is False, "unknown task id"
    assert await bus.remove("z1", "z") is False, "unknown session"
    assert await bus.holds(head)

    await bus.complete(head)
    assert (await recv(bus)).message == msg("a", 3), "the removed a2 must never be received"

    # A queued head that is not in flight can be removed; its session is then empty.
    await bus.publish(msg("b", 1))
    assert await bus.remove("b1", "b") is True
    await assert_nothing_receivable(bus, "b1 was removed and a3 is in flight")


async def test_duplicate_publish_ignored(bus: SessionBus) -> None:
    await bus.publish(msg("a", 1))
    await bus.publish(msg("a", 1))
    await bus.publish(TaskMessage("a1", "a", 9))  # same task id, other order: still a dup
    await bus.publish(msg("a", 2))
    head = await recv(bus)
    assert head.message == msg("a", 1)
    await bus.publish(msg("a", 1))  # duplicate of the in-flight head
    await bus.complete(head)
    nxt = await recv(bus)
    assert nxt.message == msg("a", 2)
    await bus.complete(nxt)
    await assert_nothing_receivable(bus, "every duplicate publish must have been ignored")


#: (sessions, messages per session, seconds allowed) of the concurrency test: a message
#: costs the PostgreSQL bus several transactions, so it gets a smaller load.
CONCURRENCY = {"memory": (20, 25, 10.0), "postgres": (8, 6, 30.0)}


async def test_nothing_lost_under_concurrency(bus: SessionBus) -> None:
    n_sessions, per_session, allowed = CONCURRENCY[bus.name]
    sessions = [f"s{i:02d}" for i in range(n_sessions)]
    total = len(sessions) * per_session
    rng = random.Random(20240601)

    counts: Counter[str] = Counter()
    received: dict[str, list[int]] = defaultdict(list)
    in_flight: set[str] = set()
    overlaps: list[TaskMessage] = []
    done = asyncio.Event()

    async def publisher(owned: list[str]) -> None:
        # Each session has one publisher, which publishes it in increasing order.
        for order in range(1, per_session + 1):
            for session in owned:
                await bus.publish(TaskMessage(f"{session}-{order}", session, order))
                if rng.random() < 0.5:
                    await asyncio.sleep(0)

    async def consumer(seed: int) -> None:
        crng = random.Random(seed)
        while True:
            try:
                delivery = await bus.receive()
            except BusClosed:
                return
            message = delivery.message
            if message.session_id in in_flight:
                overlaps.append(message)
            in_flight.add(message.session_id)
            counts[message.task_id] += 1
            received[message.session_id].append(message.order)
            for _ in range(crng.randrange(4)):
                await asyncio.sleep(0)
            in_flight.discard(message.session_id)  # before complete: it may hand over at once
            await bus.complete(delivery)
            if counts.total() >= total:
                done.set()

    consumers = [asyncio.create_task(consumer(seed)) for seed in range(6)]
    try:
        await asyncio.gather(*(publisher(sessions[i::4]) for i in range(4)))
        try:
            await asyncio.wait_for(done.wait(), allowed)
        except TimeoutError:
            pytest.fail(f"only {counts.total()} of {total} messages received within {allowed}s")
    finally:
        await bus.close()
        await asyncio.wait_for(asyncio.gather(*consumers), WAIT)

    expected = {f"{s}-{o}" for s in sessions for o in range(1, per_session + 1)}
    assert set(counts) == expected
    duplicates = {task_id: n for task_id, n in counts.items() if n != 1}
    assert not duplicates, f"received more than once: {duplicates}"
    for session, orders in received.items():
        assert orders == sorted(set(orders)), f"{session} out of order: {orders}"
    assert not overlaps, f"two messages of one session in flight at once: {overlaps[:5]}"


# -- waking receivers -------------------------------------------------------------------


async def test_receive_wakes_without_polling(bus: SessionBus) -> None:
    receiver = asyncio.create_task(bus.receive())
    await asyncio.sleep(quiet(bus))
    assert not receiver.done(), "receive() on an empty bus must wait"
    await bus.publish(msg("a", 1))
    try:
        delivery = await asyncio.wait_for(receiver, WAIT)
    except TimeoutError:
        pytest.fail("a blocked receiver was not woken by publish()")
    assert delivery.message == msg("a", 1)


async def test_close_wakes_receivers(bus: SessionBus) -> None:
    receivers = [asyncio.create_task(bus.receive()) for _ in range(3)]
    await asyncio.sleep(quiet(bus))
    assert not any(r.done() for r in receivers)
    await bus.close()
    for receiver in receivers:
        with pytest.raises(BusClosed):
            await asyncio.wait_for(receiver, WAIT)
    with pytest.raises(BusClosed):
        await asyncio.wait_for(bus.receive(), WAIT)


async def test_stop_receiving_ends_every_receive_and_nothing_else(bus: SessionBus) -> None:
    # The worker stops: its waiting receivers end, so do later ones; publishing goes on,
    # and a delivery already out is still handed back.
    await bus.publish(msg("a", 1))
    held = await recv(bus)
    receivers = [asyncio.create_task(bus.receive()) for _ in range(2)]
    await asyncio.sleep(quiet(bus))
    assert not any(r.done() for r in receivers)
    await bus.stop_receiving()
    for receiver in receivers:
        with pytest.raises(BusClosed):
            await asyncio.wait_for(receiver, WAIT)
    await bus.publish(msg("b", 1))
    await bus.complete(held)
    with pytest.raises(BusClosed):
        await asyncio.wait_for(bus.receive(), WAIT)


async def test_cancelled_receiver_does_not_swallow_wakeup(bus: SessionBus) -> None:
    # Two workers wait; a message arrives and the first waiter is cancelled (worker
    # shutdown, or an asyncio.wait_for timeout) before it gets to run. The message must
    # still reach the other waiter.
    first = asyncio.create_task(bus.receive())
    second = asyncio.create_task(bus.receive())
    await asyncio.sleep(quiet(bus))
    assert not first.done() and not second.done()
    await bus.publish(msg("a", 1))
    await cancel_receiver(bus, first, second)
    if first.cancelled():
        try:
            delivery = await asyncio.wait_for(second, WAIT)
        except TimeoutError:
            delivery = None
        assert delivery is not None, (
            "BUG: wake-up lost: a1 was published while two receivers waited; the first "
            "was cancelled right after publish(), and the second was never woken "
            f"(still blocked after {WAIT}s although a1 is receivable)"
        )
    else:  # the first receiver got it before the cancel took effect: also fine
        delivery = first.result()
        await cancel_receiver(bus, second)
    assert delivery.message == msg("a", 1)


async def cancel_receiver(
    bus: SessionBus, receiver: asyncio.Task[Delivery], *others: asyncio.Task[Delivery]
) -> None:
    """Cancel a pending receive(); fail if it is still running ``WAIT`` seconds later (after
    closing the bus, which ends it and ``others`` with BusClosed)."""
    receiver.cancel()
    await asyncio.wait({receiver}, timeout=WAIT)
    if receiver.done():
        return
    await bus.close()
    for task in (receiver, *others):
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
    pytest.fail(
        f"BUG: receive() ignored cancel(): still running {WAIT}s after it was cancelled "
        "(a worker that stops cancels its receive; this one would keep receiving)"
    )


# -- property: random interleavings against a reference model ----------------------------

SESSIONS = ("a", "b", "c")
#: Operation kinds, repeated to weight them.
KINDS = (
    *["publish"] * 4,
    "republish",
    *["receive"] * 3,
    "probe",
    *["complete"] * 2,
    "defer",
    "release",
    *["remove"] * 2,
    "remove_any",
    *["stale"] * 2,
)
#: (kind, session, order, pick, stale_action): each kind uses the fields it needs; ``pick``
#: indexes (modulo) the candidates of the operation, e.g. the held deliveries.
Op = tuple[str, str, int, int, str]
OPERATION = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(SESSIONS),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=15),
    st.sampled_from(("complete", "defer", "release")),
)


class Model:
    """Reference model: per session the sorted orders of its queued messages (the
    in-flight one included), and the live delivery while one is in flight. The head of a
    session that is not held is its lowest order. Task ids are ``f"{session}{order}"``.
    """

    def __init__(self) -> None:
        self.queues: dict[str, list[int]] = {s: [] for s in SESSIONS}
        self.live: dict[str, Delivery] = {}
        self.stale: list[Delivery] = []
        self.retired: set[str] = set()  # completed or removed: never published again
        #: Per session, the fences of its deliveries so far, in order.
        self.fences: dict[str, list[int]] = {}

    def receivable(self) -> dict[str, int]:
        return {s: q[0] for s, q in self.queues.items() if q and s not in self.live}

    def queued(self) -> list[TaskMessage]:
        """Every queued message: the in-flight ones first, then by queue position."""
        held = {(d.message.session_id, d.message.order) for d in self.live.values()}
        return [
            msg(s, o)
            for _, _, s, o in sorted(
                ((s, o) not in held, i, s, o)
                for s, q in self.queues.items()
                for i, o in enumerate(q)
            )
        ]

    def __repr__(self) -> str:
        return f"queues {self.queues}, held {sorted(self.live)}"


async def check_receive(bus: SessionBus, model: Model) -> Delivery | None:
    """Receive once; the bus must hand out one of the model's receivable heads, or nothing."""
    heads = model.receivable()
    if not heads:
        try:
            got = await asyncio.wait_for(bus.receive(), QUIET_PROPERTY[bus.name])
        except TimeoutError:
            return None
        pytest.fail(f"nothing is receivable ({model}); but receive() returned {got.message}")
    delivery = await recv(bus)
    message = delivery.message
    assert message.session_id in heads, f"received {message}; receivable heads are {heads}"
    assert message.task_id == f"{message.session_id}{heads[message.session_id]}", (
        f"received {message}; receivable heads are {heads} ({model})"
    )
    assert message.order == heads[message.session_id]
    fences = model.fences.setdefault(message.session_id, [])
    assert not fences or delivery.fence > fences[-1], (
        f"{message}: fence {delivery.fence} after {fences} in its session; a new receive "
        "must get a fence greater than every earlier one of its session"
    )
    fences.append(delivery.fence)
    model.live[message.session_id] = delivery
    return delivery


async def apply(bus: SessionBus, model: Model, op: Op) -> None:
    kind, session, order, pick, stale_action = op
    past = datetime.now(UTC) - timedelta(seconds=1)
    if kind == "publish":
        message = msg(session, order)
        if message.task_id in model.retired:
            return
        await bus.publish(message)
        if order not in model.queues[session]:  # else a duplicate, to be ignored
            bisect.insort(model.queues[session], order)
    elif kind == "republish":  # a duplicate of a queued (perhaps in-flight) message
        queued = model.queued()
        if queued:
            await bus.publish(queued[pick % len(queued)])
    elif kind == "receive":
        await check_receive(bus, model)
    elif kind == "probe":  # receive every receivable head, check the rest wait, release
        probed: list[Delivery] = []
        while (delivery := await check_receive(bus, model)) is not None:
            probed.append(delivery)
        for delivery in probed:
            await bus.release(delivery)
            del model.live[delivery.message.session_id]
            model.stale.append(delivery)
    elif kind in ("complete", "defer", "release"):
        if not model.live:
            return
        session = sorted(model.live)[pick % len(model.live)]
        delivery = model.live.pop(session)
        if kind == "complete":
            await bus.complete(delivery)
            model.queues[session].remove(delivery.message.order)
            model.retired.add(delivery.message.task_id)
        elif kind == "defer":
            await bus.defer(delivery, past)
        else:
            await bus.release(delivery)
        model.stale.append(delivery)
    elif kind in ("remove", "remove_any"):
        if kind == "remove":  # a queued message, perhaps the in-flight one
            queued = model.queued()
            if not queued:
                return
            message = queued[pick % len(queued)]
        else:  # any id: queued, in flight, completed, removed or never published
            message = msg(session, order)
        queue = model.queues[message.session_id]
        held = model.live.get(message.session_id)
        in_flight = held is not None and held.message.order == message.order
        expected = message.order in queue and not in_flight
        removed = await bus.remove(message.task_id, message.session_id)
        assert removed is expected, f"remove({message.task_id}) returned {removed}; {model}"
        if removed:
            queue.remove(message.order)
            model.retired.add(message.task_id)
    elif kind == "stale":  # every operation through a stale delivery is a no-op
        # Prefer a stale delivery of a session that is held again; the latest first.
        contested = [d for d in model.stale if d.message.session_id in model.live]
        candidates = contested or model.stale
        if not candidates:
            return
        delivery = candidates[-1 - pick % len(candidates)]
        if stale_action == "complete":
            await bus.complete(delivery)
        elif stale_action == "defer":
            await bus.defer(delivery, past)
        else:
            await bus.release(delivery)
    else:  # pragma: no cover
        raise AssertionError(op)


async def run_scenario(impl: str, ops: list[Op]) -> None:
    """Apply ``ops`` to a fresh bus and to the model; they must agree throughout."""
    async with open_bus(impl) as bus:
        model = Model()
        for op in ops:
            await apply(bus, model, op)
            for delivery in model.live.values():
                assert await bus.holds(delivery), f"lost the lease of {delivery}"
            for delivery in model.stale:
                assert not await bus.holds(delivery), f"stale {delivery} still holds"

        # Nothing is lost: complete what is held; everything queued then comes out in order.
        while True:
            for session, delivery in sorted(model.live.items()):
                await bus.complete(delivery)
                model.queues[session].remove(delivery.message.order)
            model.live.clear()
            if await check_receive(bus, model) is None:
                break
        assert not any(model.queues.values()), f"never received: {model.queued()}"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_random_interleavings_match_model(impl: str) -> None:
    if impl == "postgres":
        pg.require_postgres()

    @settings(max_examples=EXAMPLES[impl], deadline=None, phases=PHASES[impl])
    @given(ops=st.lists(OPERATION, min_size=10, max_size=50))
    def random_interleavings(ops: list[Op]) -> None:
        asyncio.run(run_scenario(impl, ops))

    random_interleavings()


# -- PostgreSQL only: several workers on one database, leases, NOTIFY --------------------


async def listening(adapter: TaskTableBus, count: int) -> None:
    """Wait until ``count`` connections LISTEN on the database of ``adapter``."""
    for _ in range(100):
        async with adapter.db.read() as session:
            listeners = await session.scalar(
                select(func.count())
                .select_from(text("pg_stat_activity"))
                .where(
                    text("datname = current_database()"),
                    text("query LIKE 'LISTEN %'"),
                )
            )
        if listeners is not None and listeners >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"fewer than {count} bus listeners connected within 5s")


async def test_postgres_two_workers_never_hold_one_entity_at_once() -> None:
    async with postgres_buses(2, poll_interval=0.5) as (one, two):
        # A session held by one worker is not receivable by the other.
        for message in (msg("a", 1), msg("a", 2), msg("b", 1)):
            await one.publish(message)
        held = await recv(one)
        assert held.message == msg("a", 1)
        other = await recv(two)
        assert other.message == msg("b", 1), f"a is held by the first worker; got {other.message}"
        await assert_nothing_receivable(two, "a2 waits behind a1, held by the other worker")
        await assert_nothing_receivable(one, "a is ours, b is the other worker's")
        assert not await two.holds(held), "a delivery holds only for the worker that got it"
        await one.complete(held)
        assert (await recv(two)).message == msg("a", 2), "a is free again, for any worker"

        # Both workers receive concurrently; no session is ever in flight twice.
        sessions = [f"s{i}" for i in range(6)]
        per_session = 6
        for order in range(1, per_session + 1):
            for session in sessions:
                await one.publish(TaskMessage(f"{session}-{order}", session, order))
        total = len(sessions) * per_session
        in_flight: dict[str, str] = {}
        overlaps: list[tuple[str, str, str]] = []
        received: dict[str, list[int]] = defaultdict(list)
        by_worker: Counter[str] = Counter()
        done = asyncio.Event()

        async def consumer(worker: TaskTableBus, label: str, seed: int) -> None:
            rng = random.Random(seed)
            while True:
                try:
                    delivery = await worker.receive()
                except BusClosed:
                    return
                message = delivery.message
                if not message.task_id.startswith("s"):
                    await worker.complete(delivery)  # a leftover of the first part
                    continue
                if message.session_id in in_flight:
                    overlaps.append((message.session_id, in_flight[message.session_id], label))
                in_flight[message.session_id] = label
                received[message.session_id].append(message.order)
                by_worker[label] += 1
                await asyncio.sleep(rng.random() * 0.01)  # hold it while the other tries
                del in_flight[message.session_id]
                await worker.complete(delivery)
                if by_worker.total() >= total:
                    done.set()

        consumers = [
            asyncio.create_task(consumer(worker, label, seed))
            for seed, (worker, label) in enumerate([(one, "one"), (two, "two")] * 3)
        ]
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            pytest.fail(f"only {by_worker.total()} of {total} messages received within 30s")
        finally:
            await one.close()
            await two.close()
            await asyncio.wait_for(asyncio.gather(*consumers), WAIT)
        assert not overlaps, f"one session held by two deliveries at once: {overlaps[:5]}"
        for session in sessions:
            assert received[session] == list(range(1, per_session + 1)), (
                f"{session} received {received[session]}: lost, repeated or out of order"
            )
        assert by_worker["one"] and by_worker["two"], (
            f"both workers should have received some messages: {dict(by_worker)}"
        )


async def test_postgres_expired_lease_is_taken_over_with_a_higher_fence() -> None:
    async with postgres_buses(2, lease_seconds=1.0, poll_interval=0.2) as (stalled, taker):
        taker.bus.lease_seconds = 30.0  # only the stalled worker's lease runs out here
        await stalled.publish(msg("a", 1))
        await stalled.publish(msg("a", 2))
        old = await recv(stalled)  # its worker then stalls: no heartbeat
        assert old.message == msg("a", 1)
        try:
            early: Delivery | None = await asyncio.wait_for(taker.receive(), 0.4)
        except TimeoutError:
            early = None
        assert early is None, f"a is leased for 1s, yet the other worker received {early}"

        new = await asyncio.wait_for(taker.receive(), 5)  # once the lease has expired
        assert new.message.task_id == "a1", "the expired head is taken over, not skipped"
        assert new.lease is not None and new.lease.owner == taker.bus.owner
        assert new.fence > old.fence, f"takeover fence {new.fence} <= stale {old.fence}"
        assert not await stalled.holds(old), "the stalled worker's lease was taken over"
        assert await stalled.heartbeat(old) is False, "a lost lease cannot be renewed"
        assert await taker.holds(new)

        # Whatever the stalled worker does now is fenced off.
        await stalled.complete(old)
        await stalled.release(old)
        assert await taker.holds(new), "a stale holder must not unlock the new holder"
        assert await taker.status("a1") == TaskStatus.RUNNING, "a fenced write went through"
        await assert_nothing_receivable(stalled, "a is held by the worker that took it over")
        await taker.complete(new)
        assert await taker.status("a1") == TaskStatus.COMPLETED
        assert (await recv(stalled)).message == msg("a", 2)


async def test_postgres_claim_skips_a_session_row_locked_by_another_claimer() -> None:
    async with postgres_buses(1) as (worker,):
        await worker.publish(msg("a", 1))  # a has the older head: it is tried first
        await worker.publish(msg("b", 1))
        async with worker.db.write() as session:  # both sessions known and free
            await session.execute(
                text(
                    "INSERT INTO bus_sessions (entity_id, fence) VALUES ('a', 0), ('b', 0) "
                    "ON CONFLICT DO NOTHING"
                )
            )
        # Another worker is in the middle of claiming a: it holds a's session row locked.
        other = await asyncpg.connect(asyncpg_dsn(worker.db.url))
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM bus_sessions WHERE entity_id = 'a' FOR UPDATE")
                got = await asyncio.wait_for(worker.receive(), WAIT)
                assert got.message.session_id == "b", (
                    "a's row is locked by another claimer: skip it (SKIP LOCKED), not wait"
                )
        finally:
            await other.close()


async def test_postgres_heartbeat_keeps_the_lease() -> None:
    async with postgres_buses(2, lease_seconds=1.0, poll_interval=0.2) as (holder, other):
        await holder.publish(msg("a", 1))
        held = await recv(holder)
        waiting = asyncio.create_task(other.receive())
        try:
            for beat in range(8):  # 2.4s, well past the 1s lease
                await asyncio.sleep(0.3)
                assert await holder.heartbeat(held), f"heartbeat {beat} found the lease lost"
                assert not waiting.done(), f"taken over after {beat} heartbeats: {waiting}"
            assert await holder.holds(held)
            # No more heartbeats: the lease runs out and the other worker takes over.
            taken = await asyncio.wait_for(waiting, 5)
        finally:
            waiting.cancel()
        assert taken.message.task_id == "a1" and taken.fence > held.fence


async def test_postgres_notify_wakes_a_blocked_receiver_at_once() -> None:
    # Both buses poll every 30s: only a NOTIFY can wake a receiver within the test.
    prompt = 3.0
    async with postgres_buses(2, poll_interval=30.0) as (publisher, receiver):
        waiting = asyncio.create_task(receiver.receive())
        try:
            await listening(receiver, 1)
            await asyncio.sleep(0.5)  # it has looked once more and gone to sleep
            # The premise: a new row alone, without NOTIFY, wakes nobody.
            await publisher.insert_row(msg("a", 1))
            await asyncio.wait({waiting}, timeout=1.0)
            assert not waiting.done(), "woke without a NOTIFY: the receiver is polling"

            started = asyncio.get_running_loop().time()
            await publisher.publish(msg("a", 1))  # the row exists: this only notifies
            got = await asyncio.wait_for(waiting, 10)
            elapsed = asyncio.get_running_loop().time() - started
            assert got.message == msg("a", 1)
            assert elapsed < prompt, f"publish() woke the receiver after {elapsed:.1f}s"

            # complete() by one worker wakes another one waiting for the same session.
            await publisher.publish(msg("a", 2))
            waiting = asyncio.create_task(publisher.receive())
            await listening(publisher, 2)
            await asyncio.sleep(0.5)
            assert not waiting.done(), "a2 waits behind a1, which the receiver holds"
            started = asyncio.get_running_loop().time()
            await receiver.complete(got)
            nxt = await asyncio.wait_for(waiting, 10)
            elapsed = asyncio.get_running_loop().time() - started
            assert nxt.message == msg("a", 2)
            assert elapsed < prompt, f"complete() woke the other worker after {elapsed:.1f}s"
        finally:
            waiting.cancel()


async def test_postgres_publish_in_wakes_at_commit_and_never_on_rollback() -> None:
    """A submission wakes workers from inside its own transaction (TaskService._queueing):
    nobody is woken by one that rolls back, and a committed one wakes a receiver at once."""
    async with postgres_buses(2, poll_interval=30.0) as (publisher, receiver):
        assert publisher.bus.publishes_in_transaction
        waiting = asyncio.create_task(receiver.receive())
        try:
            await listening(receiver, 1)
            await asyncio.sleep(0.5)  # it has looked once more and gone to sleep

            class Abandoned(Exception):
                pass

            with pytest.raises(Abandoned):
                async with publisher.db.write() as session:
                    await publisher.bus.publish_in(session, msg("a", 1))
                    raise Abandoned
            await publisher.insert_row(msg("a", 1))  # the row alone wakes nobody
            await asyncio.wait({waiting}, timeout=1.5)
            assert not waiting.done(), "a rolled-back publish_in woke the receiver"

            started = asyncio.get_running_loop().time()
            async with publisher.db.write() as session:
                await publisher.bus.publish_in(session, msg("a", 1))
            got = await asyncio.wait_for(waiting, 10)
            elapsed = asyncio.get_running_loop().time() - started
            assert got.message == msg("a", 1)
            assert elapsed < 3.0, f"the committed publish_in woke the receiver after {elapsed:.1f}s"
        finally:
            waiting.cancel()


async def test_in_process_bus_is_published_to_after_commit() -> None:
    bus = InMemorySessionBus()
    assert not bus.publishes_in_transaction
    await bus.close()


async def test_in_process_bus_hands_the_submitters_copy_to_the_first_receipt_only() -> None:
    """The in-memory bus passes ``TaskMessage.snapshot`` on as ``Delivery.task`` (the worker
    then needs no read), once: a redelivery (after a release, a retry's backoff) carries
    none, and it keeps at most MAX_SNAPSHOTS of them."""
    bus = InMemorySessionBus()
    copy = Task(id="t1", status="QUEUED")
    await bus.publish(TaskMessage("t1", "e1", 1, snapshot=copy))
    first = await asyncio.wait_for(bus.receive(), WAIT)
    assert first.task is copy
    assert first.message.snapshot is None, "the queue keeps no copy"
    await bus.release(first)
    again = await asyncio.wait_for(bus.receive(), WAIT)
    assert again.message.task_id == "t1" and again.task is None
    await bus.complete(again)

    many = memory_bus.MAX_SNAPSHOTS + 5
    for n in range(many):
        await bus.publish(TaskMessage(f"m{n}", f"s{n}", n, snapshot=Task(id=f"m{n}")))
    received = [await asyncio.wait_for(bus.receive(), WAIT) for _ in range(many)]
    with_copy = [d for d in received if d.task is not None]
    assert len(with_copy) == memory_bus.MAX_SNAPSHOTS
    assert all(d.task is not None and d.task.id == d.message.task_id for d in with_copy)
    removed = Task(id="gone")
    await bus.publish(TaskMessage("gone", "g", 1, snapshot=removed))
    assert await bus.remove("gone", "g")
    assert "gone" not in bus._snapshots, "a removed task's copy is dropped"
    await bus.close()


async def test_postgres_cancelled_receive_stops_even_when_woken_at_the_same_time() -> None:
    # A worker that stops cancels its pending receive(). If a NOTIFY arrives in the same
    # event-loop iteration (the LISTEN callback sets the bus's wake-up event), the
    # receive() must still end with CancelledError, not go on receiving.
    async with postgres_buses(1) as (adapter,):
        bus = adapter.bus
        receiver = asyncio.create_task(bus.receive())
        await listening(adapter, 1)
        await asyncio.sleep(0.3)  # asleep, waiting for a wake-up
        assert not receiver.done()
        bus._wake.set()  # what the LISTEN callback does for a NOTIFY
        receiver.cancel()
        await asyncio.wait({receiver}, timeout=WAIT)
        if not receiver.done():
            await bus.close()
            with contextlib.suppress(BusClosed, asyncio.CancelledError):
                await asyncio.wait_for(receiver, WAIT)
            pytest.fail(
                "BUG: PostgresSessionBus.receive() swallowed its cancellation: it was "
                f"cancelled while a NOTIFY woke it and was still receiving {WAIT}s later. "
                "It waits with asyncio.wait_for(self._wake.wait(), timeout), which on "
                "Python 3.11 returns the inner result instead of raising CancelledError "
                "when both happen at once; Worker.stop() then waits forever for its "
                "receive loop (Runtime.stop() hangs)."
            )
        assert receiver.cancelled(), f"receive() ended with {receiver} instead of the cancel"


async def test_postgres_a_claim_under_way_when_receiving_stops_is_handed_back() -> None:
    # Stopping does not interrupt a claim (cancelled after PostgreSQL committed it, its
    # lease would be lost until it expires): the claim ends, its session is released at
    # once (with a wake-up), and receive() ends with BusClosed.
    async with postgres_buses(2) as (leaving, staying):
        await leaving.publish(msg("a", 1))
        lock = await asyncpg.connect(asyncpg_dsn(leaving.db.url))
        try:
            async with lock.transaction():
                # The next claim waits for this lock.
                await lock.execute("LOCK TABLE bus_sessions IN EXCLUSIVE MODE")
                receiver = asyncio.create_task(leaving.receive())
                await pg.claim_waiting_for_a_lock(leaving.db.url, WAIT)
                await leaving.stop_receiving()
                await asyncio.sleep(quiet(leaving))
                assert not receiver.done(), "the claim under way must not be interrupted"
            with pytest.raises(BusClosed):
                await asyncio.wait_for(receiver, WAIT)
        finally:
            await lock.close()
        assert (await recv(staying)).message == msg("a", 1)


async def test_postgres_cancel_request_reaches_the_other_process() -> None:
    async with postgres_buses(2) as (api, worker):
        heard: list[str] = []
        worker.on_cancel(heard.append)
        # The worker's LISTEN connection comes up in the background; a request sent before
        # it listens is lost (the stored flag covers that), so keep asking until it hears.
        async with asyncio.timeout(WAIT * 5):
            while "a1" not in heard:
                await api.request_cancel("a1")
                await asyncio.sleep(0.1)
