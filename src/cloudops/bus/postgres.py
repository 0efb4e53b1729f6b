"""The PostgreSQL session bus: durable, shared by any number of worker processes.

The tasks table is the queue (QUEUED/RUNNING tasks of an entity, by ``queue_seq``); the
``bus_sessions`` table holds one lease per entity, created with the entity's first task. A
worker claims an entity whose lease is free or expired and whose head can run, in one
statement: it locks the entity's session row with ``FOR UPDATE SKIP LOCKED`` (a row another
worker is claiming is skipped, not waited for) and takes the lease by bumping ``fence``;
every write it then makes is conditional on (owner, fence). The bus's own statements run
on autocommit connections: each is one round trip, with no BEGIN or COMMIT. FIFO and
one-running-per-entity therefore hold in the database, whatever happens to the processes.
A submission to a free session sends NOTIFY, so an idle worker claims it at once; the
statement that ends a task releases its session quietly and the same process claims again
at once (a NOTIFY there would wake every worker for one task). A slow poll is the safety
net for lost notifications and expiring leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import cast

import asyncpg
from sqlalchemy import (
    String,
    Table,
    bindparam,
    case,
    column,
    exists,
    func,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.bus.base import BusClosed, Delivery, InStatement, Lease, TaskMessage
from cloudops.bus.statistics import QueueStatistics
from cloudops.db.engine import Database
from cloudops.db.models import BusSession, Task
from cloudops.db.types import utcnow

log = logging.getLogger(__name__)

CHANNEL = "cloudops_bus"
#: Payload: the id of a RUNNING task whose cancel was requested.
CANCEL_CHANNEL = "cloudops_cancel"

# One statement claims one session: the earliest runnable head (a QUEUED or RUNNING task
# with nothing earlier queued on its entity, walked in queue order over the active tasks'
# partial index) whose session is free or expired. SKIP LOCKED: a session row that another
# worker is claiming right now is skipped, not waited for, and a row that changed since
# the statement's snapshot is checked again under its lock. The head, returned whole so
# that the worker need not read it again, comes from the snapshot: if something happened
# to it in between, STARTED's guard (the status, attempt and last_sequence read here)
# fails, the session is released, and the next claim reads the task afresh. The statement
# always returns one row: the claim (claim_fence not NULL), or, when it claimed nothing,
# when the earliest deferred task is due (``next_due``, NULL: none is) -- a worker that
# finds nothing need not ask again, and with several workers most wake-ups find nothing
# (each NOTIFY wakes them all).
_TASKS = cast(Table, Task.__table__)
_SESSIONS = cast(Table, BusSession.__table__)
_CLAIM = text(f"""
WITH pick AS (
    SELECT s.entity_id AS claim_entity, {", ".join(f"t.{c.name}" for c in _TASKS.c)}
    FROM tasks t JOIN bus_sessions s ON s.entity_id = t.entity_id
    WHERE t.status IN ('QUEUED', 'RUNNING')
      AND (t.run_after IS NULL OR t.run_after <= now())
      AND (s.owner IS NULL OR s.lease_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM tasks e
          WHERE e.entity_id = t.entity_id AND e.status IN ('QUEUED', 'RUNNING')
            AND e.queue_seq < t.queue_seq
      )
    ORDER BY t.queue_seq
    LIMIT 1
    FOR UPDATE OF s SKIP LOCKED
), claimed AS (
    UPDATE bus_sessions s
    SET owner = :owner, lease_until = now() + make_interval(secs => :lease),
        fence = s.fence + 1, task_id = pick.id
    FROM pick WHERE s.entity_id = pick.claim_entity
    RETURNING s.fence AS claim_fence, pick.*
)
SELECT claimed.*, CASE WHEN claimed.claim_fence IS NULL THEN (
    SELECT min(run_after) FROM tasks WHERE status = 'QUEUED' AND run_after > now()
) END AS next_due
FROM (SELECT 1) AS one LEFT JOIN claimed ON true
""").columns(
    # Every returned column, in order: SQLAlchemy then matches them by position and keeps
    # the result's metadata with the cached statement instead of rebuilding it by name on
    # each claim (about 5 % of a busy worker's CPU).
    column("claim_fence", _SESSIONS.c.fence.type),
    column("claim_entity", _SESSIONS.c.entity_id.type),
    *(column(c.name, c.type) for c in _TASKS.c),
    column("next_due", _TASKS.c.run_after.type),
)
#: (attribute, column name) of the Task columns: they differ for ``meta``.
_TASK_ATTRIBUTES = [(a.key, a.columns[0].name) for a in Task.__mapper__.column_attrs]

# Every entity with work has a session row, created with its first task (in the
# submission's transaction), so the claim can join on it; NOTIFY is delivered at commit.
_ENSURE_AND_WAKE = text("""
WITH ensured AS (
    INSERT INTO bus_sessions (entity_id, owner, lease_until, fence)
    VALUES (:entity, NULL, NULL, 0)
    ON CONFLICT (entity_id) DO NOTHING
)
SELECT pg_notify(:channel, '')
""")


#: The same, as the part of a submission's one statement (see InStatement), which wakes
#: workers only when the entity's session is free. While it is held, the new task waits
#: behind the running one, and the holder's release wakes a worker (the holder's own
#: process, see released_in_statement) that will find it.
#: A session the statement's snapshot saw held is locked (FOR SHARE) and PostgreSQL checks
#: it again at its latest version: a release that committed since then (whose wake-up
#: could have found nothing, the task not yet committed) makes it free, and the
#: submission wakes; a release still to come waits for the submission's commit, and
#: then sees its task. Judged on the snapshot alone, the task could wait for the next
#: poll. A free session is not locked: the interleaved layout pays nothing. The backlog
#: layout's submissions are spared the NOTIFY (a global lock in PostgreSQL, kept through
#: the commit) and the empty claim of every worker that it would wake.
_BUS_ENTITY = bindparam("bus_entity", type_=String)
_SESSION_HELD = (
    select(_SESSIONS.c.entity_id)
    .where(
        _SESSIONS.c.entity_id == _BUS_ENTITY,
        _SESSIONS.c.owner.is_not(None),
        _SESSIONS.c.lease_until >= func.now(),
    )
    .with_for_update(read=True)
    .cte("bus_held")
)
_IN_SUBMISSION: InStatement[str] = InStatement(
    ctes=(
        pg_insert(_SESSIONS)
        .values(entity_id=_BUS_ENTITY, owner=None, lease_until=None, fence=0)
        .on_conflict_do_nothing(index_elements=["entity_id"])
        .cte("bus_session"),
        _SESSION_HELD,
    ),
    columns=(
        case(
            (
                exists(select(_SESSION_HELD.c.entity_id)),
                null(),
            ),
            else_=func.pg_notify(bindparam("bus_channel", type_=String), literal("")),
        ).label("woken"),
    ),
    params=lambda session_id: {"bus_entity": session_id, "bus_channel": CHANNEL},
)

#: Releasing the session from the statement that writes the attempt's last event: the
#: task's final state and the free session commit at once, in one round trip. Fenced like
#: every release. It sends no NOTIFY: the releasing process claims again right after it
#: (``released_in_statement``), and a NOTIFY would wake every worker for the one task it
#: made claimable -- with several workers most of them claimed nothing, and every
#: notifying commit takes PostgreSQL's global notification lock through its WAL flush.
_RELEASE_IN_STATEMENT: InStatement[Lease] = InStatement(
    ctes=(
        update(_SESSIONS)
        .where(
            _SESSIONS.c.entity_id == bindparam("r_entity"),
            _SESSIONS.c.owner == bindparam("r_owner"),
            _SESSIONS.c.fence == bindparam("r_fence"),
        )
        .values(owner=None, lease_until=None, task_id=None)
        .cte("released"),
    ),
    columns=(),
    params=lambda lease: {
        "r_entity": lease.entity_id,
        "r_owner": lease.owner,
        "r_fence": lease.fence,
    },
)

_RELEASE_AND_WAKE = text("""
WITH released AS (
    UPDATE bus_sessions SET owner = NULL, lease_until = NULL, task_id = NULL
    WHERE entity_id = :entity AND owner = :owner AND fence = :fence
)
SELECT pg_notify(:channel, '')
""")

_EXTEND = text("""
UPDATE bus_sessions SET lease_until = now() + make_interval(secs => :lease)
WHERE entity_id = :entity AND owner = :owner AND fence = :fence
""")

_HOLDS = text("""
SELECT 1 FROM bus_sessions
WHERE entity_id = :entity AND owner = :owner AND fence = :fence AND lease_until > now()
""")

_IN_FLIGHT = text("""
SELECT EXISTS (SELECT 1 FROM bus_sessions s WHERE s.entity_id = :entity AND s.task_id = :task
               AND s.owner IS NOT NULL AND s.lease_until > now()) AS in_flight
FROM tasks t WHERE t.id = :task AND t.entity_id = :entity
""")


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _session_of(message: TaskMessage) -> dict[str, str]:
    return {"entity": message.session_id, "channel": CHANNEL}


class PostgresSessionBus:
    name = "postgres"

    def __init__(
        self, db: Database, *, lease_seconds: float = 30.0, poll_interval: float = 2.0
    ) -> None:
        self._db = db
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._closed = False
        self._receiving = True
        self._listener: asyncio.Task[None] | None = None
        self._claim_lock = asyncio.Lock()
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self.statistics = QueueStatistics(db)

    # -- wake-ups ------------------------------------------------------------------------
    def start_listening(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="bus-listen")

    async def _listen(self) -> None:
        """LISTEN on our channel, reconnecting after a lost connection (polling covers
        the gap)."""
        while not self._closed:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(asyncpg_dsn(self._db.url), timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda *_args, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda *_args: self._wake.set())
                await conn.add_listener(CANCEL_CHANNEL, self._on_cancel_notification)
                self._wake.set()  # something may have happened while we were away
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "bus listener disconnected; polling until it is back",
                    extra={"action": "bus_listener_lost"},
                )
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(1.0)

    def _on_cancel_notification(
        self, _conn: object, _pid: int, _channel: str, payload: str
    ) -> None:
        self._dispatch_cancel(payload)

    def _dispatch_cancel(self, task_id: str) -> None:
        for callback in self._cancel_callbacks:
            try:
                callback(task_id)
            except Exception:
                log.exception("cancel callback failed", extra={"action": "cancel_callback"})

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Other processes' requests arrive through the listener, started here (call this
        from a running event loop)."""
        self._cancel_callbacks.append(callback)
        self.start_listening()

    async def request_cancel(self, task_id: str) -> None:
        """Signal this process at once and every other one through NOTIFY (which reaches
        this process too; stopping an attempt twice is harmless)."""
        self._dispatch_cancel(task_id)
        async with self._db.autocommit() as conn:
            await conn.execute(
                text("SELECT pg_notify(:channel, :task)"),
                {"channel": CANCEL_CHANNEL, "task": task_id},
            )

    async def _notify(self) -> None:
        async with self._db.autocommit() as conn:
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    # -- the interface ---------------------------------------------------------------------
    #: The task row is the message and NOTIFY is delivered at commit: a submission wakes
    #: workers from inside its own transaction, with no second one.
    publishes_in_transaction = True
    in_statement: InStatement[str] | None = _IN_SUBMISSION
    release_in_statement: InStatement[Lease] | None = _RELEASE_IN_STATEMENT

    async def publish(self, message: TaskMessage) -> None:
        """The task row is the message (committed by the caller); this makes sure its
        entity has a session and wakes workers."""
        async with self._db.autocommit() as conn:
            await conn.execute(_ENSURE_AND_WAKE, _session_of(message))

    async def publish_in(self, session: AsyncSession, message: TaskMessage) -> None:
        await session.execute(_ENSURE_AND_WAKE, _session_of(message))

    async def receive(self) -> Delivery:
        self.start_listening()
        while True:
            if self._closed or not self._receiving:
                raise BusClosed()
            self._wake.clear()
            timeout = self.poll_interval
            try:
                delivery, due = await self._try_claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever the database says while it restarts or is unreachable (driver
                # errors come wrapped in several ways), the answer is to wait and try again.
                log.warning(
                    "bus claim failed; retrying: %s", exc, extra={"action": "bus_claim_failed"}
                )
                delivery = due = None
            if delivery is not None:
                if not self._receiving:  # stopped during the claim: the next owner's turn
                    await self._release(delivery)
                    raise BusClosed()
                return delivery
            if due is not None:
                timeout = max(0.01, min(self.poll_interval, (due - utcnow()).total_seconds()))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives together with the wake-up, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _try_claim(self) -> tuple[Delivery | None, datetime | None]:
        """A delivery; or, with nothing to claim, when the earliest deferred task is due
        (None: none is), in the claim's one round trip (see _CLAIM)."""
        params = {"owner": self.owner, "lease": self.lease_seconds}
        # One claim at a time per process is plenty.
        async with self._claim_lock, self._db.autocommit() as conn:
            row = (await conn.execute(_CLAIM, params)).one()
        self.statistics.claimed()
        if row.claim_fence is None:
            return None, row.next_due
        fence = int(row.claim_fence)
        values = row._mapping
        task = Task(**{attribute: values[name] for attribute, name in _TASK_ATTRIBUTES})
        message = TaskMessage(task.id, task.entity_id, task.queue_seq, task.run_after)
        return Delivery(message, fence, Lease(task.entity_id, self.owner, fence), task), None

    async def _release(self, delivery: Delivery) -> None:
        assert delivery.lease is not None
        async with self._db.autocommit() as conn:
            await conn.execute(
                _RELEASE_AND_WAKE,
                {
                    "entity": delivery.lease.entity_id,
                    "owner": self.owner,
                    "fence": delivery.fence,
                    "channel": CHANNEL,
                },
            )

    async def complete(self, delivery: Delivery) -> None:
        await self._release(delivery)

    async def defer(self, delivery: Delivery, run_after: datetime) -> None:
        """The retry transition already stored run_after on the task, which keeps its place
        at the head; releasing lets the claim query skip it until then."""
        await self._release(delivery)

    async def release(self, delivery: Delivery) -> None:
        await self._release(delivery)

    async def released_in_statement(self, *, claim_here: bool) -> None:
        """Claim again in this process, which has the slot just freed: the claim takes the
        earliest claimable head, and each successful claim is followed by another while
        slots are free, so a task made claimable is taken (by this process, or by one
        whose claim it was going to take); otherwise every worker is woken."""
        if claim_here:
            self._wake.set()
        else:
            await self._notify()

    async def remove(self, task_id: str, session_id: str) -> bool:
        """The caller has already marked the task CANCELLED, so no claim will return it.
        It was in flight only if a live lease on its entity was handed exactly this task."""
        async with self._db.read() as session:
            in_flight = await session.scalar(_IN_FLIGHT, {"task": task_id, "entity": session_id})
        if in_flight is None:
            return False
        if not in_flight:
            await self._notify()
        return not in_flight

    async def holds(self, delivery: Delivery) -> bool:
        if delivery.lease is None:
            return False
        async with self._db.read() as session:
            row = await session.scalar(
                _HOLDS,
                {"entity": delivery.lease.entity_id, "owner": self.owner, "fence": delivery.fence},
            )
        return row is not None

    async def heartbeat(self, delivery: Delivery) -> bool:
        if delivery.lease is None:
            return False
        async with self._db.autocommit() as conn:
            result = await conn.execute(
                _EXTEND,
                {
                    "entity": delivery.lease.entity_id,
                    "owner": self.owner,
                    "fence": delivery.fence,
                    "lease": self.lease_seconds,
                },
            )
        return bool(result.rowcount)

    async def stop_receiving(self) -> None:
        """A claim under way is not interrupted (see SessionBus.stop_receiving): cancelled
        after PostgreSQL committed it, its answer would be lost with the lease it took."""
        self._receiving = False
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self.statistics.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
