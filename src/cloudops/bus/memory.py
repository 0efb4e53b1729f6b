"""The in-process session bus of the embedded default.

It keeps no state of its own worth saving: the database is the truth and the runtime
rebuilds this bus from it at start. Receivers sleep on a condition and are woken when a
session becomes receivable (publish, complete, or a backoff timer firing): no polling.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cloudops.bus.base import BusClosed, Delivery, InStatement, Lease, TaskMessage

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from cloudops.db.models import Task

#: Submitters' task copies kept for the worker (``TaskMessage.snapshot``) at most.
MAX_SNAPSHOTS = 1024


@dataclass
class _Session:
    #: Always sorted by ``order``; the in-flight message stays in it until completed.
    queue: list[TaskMessage] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)
    #: Fence of the current holder and the task it holds; None when nobody holds it.
    holder: int | None = None
    in_flight: str | None = None
    timer: asyncio.TimerHandle | None = None

    def index_of(self, task_id: str) -> int:
        return next(i for i, m in enumerate(self.queue) if m.task_id == task_id)


class InMemorySessionBus:
    name = "memory"

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._ready: deque[str] = deque()
        self._ready_set: set[str] = set()
        self._cond = asyncio.Condition()
        self._fence = 0
        self._closed = False
        self._receiving = True
        self._wakers: set[asyncio.Task[None]] = set()
        self._cancel_callbacks: list[Callable[[str], None]] = []
        # The submitters' copies of tasks not yet received (TaskMessage.snapshot), so a
        # worker need not read each task back; a bounded number, so a long backlog
        # costs no memory for them (its tasks are read as before).
        self._snapshots: dict[str, Task] = {}

    # -- publishing ---------------------------------------------------------------
    #: Its queues live in this process, not in the database: publish after commit.
    publishes_in_transaction = False
    in_statement: InStatement[str] | None = None
    release_in_statement: InStatement[Lease] | None = None

    async def publish_in(self, session: AsyncSession, message: TaskMessage) -> None:
        raise NotImplementedError("the in-process bus is published to after commit")

    async def publish(self, message: TaskMessage) -> None:
        async with self._cond:
            session = self._sessions.setdefault(message.session_id, _Session())
            if message.task_id in session.task_ids:
                return
            if message.snapshot is not None:
                if len(self._snapshots) < MAX_SNAPSHOTS:
                    self._snapshots[message.task_id] = message.snapshot
                message = replace(message, snapshot=None)
            orders = [m.order for m in session.queue]
            session.queue.insert(bisect.bisect_right(orders, message.order), message)
            session.task_ids.add(message.task_id)
            self._refresh(message.session_id)

    # -- receiving ----------------------------------------------------------------
    async def receive(self) -> Delivery:
        async with self._cond:
            while True:
                if self._closed or not self._receiving:
                    raise BusClosed()
                while self._ready:
                    session_id = self._ready.popleft()
                    self._ready_set.discard(session_id)
                    session = self._sessions.get(session_id)
                    if session is None or session.holder is not None or not session.queue:
                        continue
                    head = session.queue[0]
                    if not _due(head):
                        self._refresh(session_id)
                        continue
                    self._fence += 1
                    session.holder = self._fence
                    session.in_flight = head.task_id
                    # A copy is good for the first delivery only (after a retry's
                    # backoff, say, the task has moved on).
                    return Delivery(head, self._fence, task=self._snapshots.pop(head.task_id, None))
                try:
                    await self._cond.wait()
                except asyncio.CancelledError:
                    # A notify meant for this waiter must not die with it.
                    if self._ready:
                        self._cond.notify(1)
                    raise

    async def complete(self, delivery: Delivery) -> None:
        async with self._cond:
            session = self._held(delivery)
            if session is None:
                return
            session.queue.pop(session.index_of(delivery.message.task_id))
            session.task_ids.discard(delivery.message.task_id)
            session.holder = session.in_flight = None
            self._refresh(delivery.message.session_id)

    async def defer(self, delivery: Delivery, run_after: datetime) -> None:
        async with self._cond:
            session = self._held(delivery)
            if session is None:
                return
            index = session.index_of(delivery.message.task_id)
            held = session.queue[index]
            session.queue[index] = TaskMessage(held.task_id, held.session_id, held.order, run_after)
            session.holder = session.in_flight = None
            self._refresh(delivery.message.session_id)

    async def release(self, delivery: Delivery) -> None:
        async with self._cond:
            session = self._held(delivery)
            if session is None:
                return
            session.holder = session.in_flight = None
            self._refresh(delivery.message.session_id)

    async def released_in_statement(self, *, claim_here: bool) -> None:
        """Nothing to do: this bus releases nothing in a statement (it has no
        ``release_in_statement``), and its own releases wake its receivers."""

    async def remove(self, task_id: str, session_id: str) -> bool:
        async with self._cond:
            session = self._sessions.get(session_id)
            if session is None or task_id not in session.task_ids:
                return False
            if session.in_flight == task_id:
                return False
            session.queue.pop(session.index_of(task_id))
            session.task_ids.discard(task_id)
            self._snapshots.pop(task_id, None)
            self._refresh(session_id)
            return True

    async def holds(self, delivery: Delivery) -> bool:
        async with self._cond:
            return self._held(delivery) is not None

    async def heartbeat(self, delivery: Delivery) -> bool:
        return await self.holds(delivery)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    async def request_cancel(self, task_id: str) -> None:
        for callback in self._cancel_callbacks:
            callback(task_id)

    async def stop_receiving(self) -> None:
        """A receive here claims without awaiting, so nothing is ever half claimed."""
        async with self._cond:
            self._receiving = False
            self._cond.notify_all()

    async def close(self) -> None:
        async with self._cond:
            self._closed = True
            for session in self._sessions.values():
                if session.timer is not None:
                    session.timer.cancel()
            self._cond.notify_all()

    # -- introspection (tests, health) -----------------------------------------------
    def pending(self) -> int:
        return sum(len(s.queue) for s in self._sessions.values())

    # -- internals (called with the condition held) --------------------------------------
    def _held(self, delivery: Delivery) -> _Session | None:
        session = self._sessions.get(delivery.message.session_id)
        if session is None or session.holder != delivery.fence:
            return None
        return session

    def _refresh(self, session_id: str) -> None:
        """Put the session on the ready list if its head can run now, or arm its timer."""
        session = self._sessions[session_id]
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        if not session.queue:
            if session.holder is None:
                del self._sessions[session_id]
            return
        if session.holder is not None:
            return
        head = session.queue[0]
        if _due(head):
            if session_id not in self._ready_set:
                self._ready.append(session_id)
                self._ready_set.add(session_id)
                self._cond.notify(1)
            return
        assert head.run_after is not None
        delay = (head.run_after - datetime.now(UTC)).total_seconds()
        loop = asyncio.get_running_loop()
        session.timer = loop.call_later(max(delay, 0.0), self._on_timer, session_id)

    def _on_timer(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._wake(session_id))
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _wake(self, session_id: str) -> None:
        async with self._cond:
            if session_id in self._sessions:
                self._sessions[session_id].timer = None
                self._refresh(session_id)


def _due(message: TaskMessage) -> bool:
    return message.run_after is None or message.run_after <= datetime.now(UTC)
