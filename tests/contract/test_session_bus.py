"""Contract suite every :class:`~cloudops.bus.base.SessionBus` implementation must pass.

Each test names the guarantee of ``cloudops.bus.base`` it checks. The suite runs once per
implementation in ``IMPLEMENTATIONS``; to add one (e.g. PostgreSQL), append its name there
and add a branch to :func:`open_bus`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudops.bus.base import BusClosed, Delivery, SessionBus, TaskMessage
from cloudops.bus.memory import InMemorySessionBus

IMPLEMENTATIONS = ["memory"]

#: Generous bound for things that must happen "eventually" (never a timing assertion).
WAIT = 2.0
#: How long to wait before concluding that nothing is receivable.
QUIET = 0.05
#: The same, in the property test (many examples, so kept shorter).
QUIET_PROPERTY = 0.01
#: Backoff used for deferrals that must still be pending during the test.
DEFER_DELAY = timedelta(seconds=0.3)


@contextlib.asynccontextmanager
async def open_bus(impl: str) -> AsyncIterator[SessionBus]:
    """A fresh, empty bus of the named implementation; closed on exit."""
    bus: SessionBus
    if impl == "memory":
        bus = InMemorySessionBus()
    else:  # pragma: no cover - guards against a param without a factory branch
        raise ValueError(f"unknown SessionBus implementation: {impl}")
    try:
        yield bus
    finally:
        await bus.close()


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
        delivery = await asyncio.wait_for(bus.receive(), QUIET)
    except TimeoutError:
        return
    pytest.fail(f"{why}; but receive() returned {delivery.message}")


async def drain(bus: SessionBus) -> list[str]:
    """Receive and complete until the bus is quiet; the task ids in receive order."""
    seen: list[str] = []
    while True:
        try:
            delivery = await asyncio.wait_for(bus.receive(), QUIET)
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
    assert len({d.fence for d in deliveries}) == 3
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
        early: Delivery | None = await asyncio.wait_for(bus.receive(), QUIET)
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
    assert await bus.remove("a2", "a") is True
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


async def test_nothing_lost_under_concurrency(bus: SessionBus) -> None:
    sessions = [f"s{i:02d}" for i in range(20)]
    per_session = 25
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
            await asyncio.wait_for(done.wait(), 10)
        except TimeoutError:
            pytest.fail(f"only {counts.total()} of {total} messages received within 10s")
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
    await asyncio.sleep(QUIET)
    assert not receiver.done(), "receive() on an empty bus must wait"
    await bus.publish(msg("a", 1))
    try:
        delivery = await asyncio.wait_for(receiver, WAIT)
    except TimeoutError:
        pytest.fail("a blocked receiver was not woken by publish()")
    assert delivery.message == msg("a", 1)


async def test_close_wakes_receivers(bus: SessionBus) -> None:
    receivers = [asyncio.create_task(bus.receive()) for _ in range(3)]
    await asyncio.sleep(QUIET)
    assert not any(r.done() for r in receivers)
    await bus.close()
    for receiver in receivers:
        with pytest.raises(BusClosed):
            await asyncio.wait_for(receiver, WAIT)
    with pytest.raises(BusClosed):
        await asyncio.wait_for(bus.receive(), WAIT)


async def test_cancelled_receiver_does_not_swallow_wakeup(bus: SessionBus) -> None:
    # Two workers wait; a message arrives and the first waiter is cancelled (worker
    # shutdown, or an asyncio.wait_for timeout) before it gets to run. The message must
    # still reach the other waiter.
    first = asyncio.create_task(bus.receive())
    second = asyncio.create_task(bus.receive())
    await asyncio.sleep(QUIET)
    assert not first.done() and not second.done()
    await bus.publish(msg("a", 1))
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
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
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
    assert delivery.message == msg("a", 1)


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
        self.fences: set[int] = set()

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
            got = await asyncio.wait_for(bus.receive(), QUIET_PROPERTY)
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
    assert delivery.fence not in model.fences, f"fence {delivery.fence} reused"
    model.fences.add(delivery.fence)
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
@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OPERATION, min_size=10, max_size=50))
def test_random_interleavings_match_model(impl: str, ops: list[Op]) -> None:
    asyncio.run(run_scenario(impl, ops))
