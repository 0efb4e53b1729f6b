"""The session bus interface, shared by the in-process and the PostgreSQL implementation.

Guarantees, per session (= entityId):
  1. messages are received in ``order`` (the queue position the database assigned);
  2. at most one message is in flight; the next becomes receivable only after the
     holder calls :meth:`SessionBus.complete` (or removes it by cancel);
  3. a deferred message (retry backoff) stays at the head: later messages wait for it;
  4. nothing published is lost until it is completed or removed.
Different sessions are independent and are received in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from sqlalchemy import CTE, ColumnElement
    from sqlalchemy.ext.asyncio import AsyncSession

    from cloudops.db.models import Task

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class TaskMessage:
    task_id: str
    session_id: str
    #: Position in the session's queue; lower runs first.
    order: int
    #: Not receivable before this time (retry backoff); None = now.
    run_after: datetime | None = None
    #: The task as its submitter just committed it, for a bus that hands messages over in
    #: this process (the in-memory bus gives it to the receiver as ``Delivery.task``).
    #: Shared, not copied: nobody changes it. Other buses ignore it.
    snapshot: Task | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds an entity's session, for fencing writes on a shared database."""

    entity_id: str
    owner: str
    fence: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message and the fence token that proves the receiver still holds it."""

    message: TaskMessage
    fence: int
    #: Set by buses whose sessions are leased in the database (the PostgreSQL bus).
    lease: Lease | None = None
    #: The task as the claim read it, where the claim reads it (the PostgreSQL bus): the
    #: worker need not read it again. It may be a moment old; STARTED is written only if
    #: the task is still at this version (its ``last_sequence``), so stale is harmless.
    task: Task | None = None


@dataclass(frozen=True, slots=True, eq=False)
class InStatement(Generic[K]):
    """The bus's part of a statement the journal sends anyway, so the bus costs no round
    trip of its own (on PostgreSQL: no BEGIN, no COMMIT): publishing a new task's message
    from the statement that inserts the task (keyed by the session id), releasing a
    session from the statement that writes its task's last event of the attempt (keyed
    by the Lease). The statement also runs ``ctes`` (data-modifying) and selects
    ``columns``, with ``params(key)`` as their bind parameters."""

    ctes: tuple[CTE, ...]
    columns: tuple[ColumnElement[Any], ...]
    params: Callable[[K], dict[str, Any]]

    def bind(self, key: K) -> BoundInStatement:
        return BoundInStatement(self, self.params(key))


@dataclass(frozen=True, slots=True)
class BoundInStatement:
    """An InStatement with its parameters, ready to ride along in a statement."""

    part: InStatement[Any]
    params: dict[str, Any]


class SessionBus(Protocol):
    name: str
    #: True: :meth:`publish_in` publishes inside the caller's write transaction. False:
    #: the caller publishes after commit, in the order the queue positions were assigned.
    publishes_in_transaction: bool
    #: Where the bus can publish from the submitting statement itself (see InStatement);
    #: None: publish with :meth:`publish_in` or :meth:`publish`.
    in_statement: InStatement[str] | None
    #: Where the bus can release a leased session from the statement that writes the
    #: attempt's last event (see InStatement): the caller then skips :meth:`complete` /
    #: :meth:`defer` and calls :meth:`released_in_statement`. None: release with those.
    release_in_statement: InStatement[Lease] | None

    async def publish(self, message: TaskMessage) -> None:
        """Queue a message in its session (by ``order``); a duplicate task_id is ignored."""

    async def publish_in(self, session: AsyncSession, message: TaskMessage) -> None:
        """Publish as part of the caller's open write transaction: receivable once it
        commits, never if it rolls back (only where ``publishes_in_transaction``)."""

    async def receive(self) -> Delivery:
        """Wait for the head of a free session whose run_after has come; lock that session."""

    async def complete(self, delivery: Delivery) -> None:
        """Remove the head and unlock the session: its next message becomes receivable."""

    async def defer(self, delivery: Delivery, run_after: datetime) -> None:
        """Keep the message at the head, unlock, and make it receivable at ``run_after``."""

    async def release(self, delivery: Delivery) -> None:
        """Unlock without removing (e.g. shutdown): the head is receivable again at once."""

    async def released_in_statement(self, *, claim_here: bool) -> None:
        """A statement of the caller's released a session (``release_in_statement``),
        which wakes nobody: this process claims again at once (``claim_here``: its receive
        loop goes on), or every worker is woken (this one stops receiving, or the head
        was deferred and every worker's claim should learn when it is due)."""

    async def remove(self, task_id: str, session_id: str) -> bool:
        """Drop a queued message (cancel). False when it is in flight or unknown."""

    async def holds(self, delivery: Delivery) -> bool:
        """Whether the delivery is still the session's lock holder (lease not lost)."""

    async def heartbeat(self, delivery: Delivery) -> bool:
        """Extend the holder's lease; False when it was lost (the holder must stop)."""

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(task_id)`` whenever :meth:`request_cancel` is called on any bus
        sharing this one's queues (any process, for a shared bus)."""

    async def request_cancel(self, task_id: str) -> None:
        """Ask whoever runs ``task_id`` to stop it now (the caller has already stored the
        request, so a missed signal only delays the stop to the holder's next write)."""

    async def stop_receiving(self) -> None:
        """Receive nothing more (the worker stops): a waiting receive() and every later one
        raise :class:`BusClosed`. A claim under way finishes first and hands back what it
        claimed: cancelled in the middle of its statement, it could leave a shared bus's
        session leased to nobody until the lease expires. Publishing, cancel signals and
        the calls about deliveries already received go on."""

    async def close(self) -> None:
        """Stop: wake every waiting receiver with :class:`BusClosed`."""


class BusClosed(Exception):
    """Raised by receive() once the bus is closed."""
