"""The journal: the one place that changes a task and appends its event.

Each change is a single ``UPDATE tasks ... WHERE <guard> RETURNING`` that bumps
``last_sequence``, followed by the insert of the event with that sequence, in one
transaction. The guard (expected statuses, attempt) is how concurrent writers are fenced:
zero rows updated means somebody else moved the task and the caller must not write.
Events are published through the hub only after the transaction has committed, so the
stored events and the broadcast ones are the same events (invariant 3).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.bus.base import Lease
from cloudops.db.engine import Database
from cloudops.db.models import Artifact, BusSession, Task, TaskEvent
from cloudops.db.types import new_id, utcnow
from cloudops.domain import EventKind, TaskStatus
from cloudops.events.hub import EventHub
from cloudops.events.records import EventRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Guard:
    """What the writer expects the task to be; the write happens only if it still is."""

    statuses: Collection[TaskStatus]
    attempt: int | None = None
    #: On a shared database: write only while this lease is still ours.
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    event: EventRecord
    cancel_requested: bool


class JournalTransaction:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.events: list[EventRecord] = []

    async def append(
        self,
        task_id: str,
        kind: EventKind,
        guard: Guard,
        values: dict[str, Any] | None = None,
        *,
        step: dict[str, Any] | None = None,
        message: str | None = None,
        artifact: Artifact | None = None,
        at: datetime | None = None,
    ) -> Appended | None:
        """Apply ``values`` and append one event; None when the guard no longer holds."""
        now = at or utcnow()
        conditions = [Task.id == task_id, Task.status.in_([s.value for s in guard.statuses])]
        if guard.attempt is not None:
            conditions.append(Task.attempt == guard.attempt)
        if guard.lease is not None:
            conditions.append(
                exists().where(
                    BusSession.entity_id == guard.lease.entity_id,
                    BusSession.owner == guard.lease.owner,
                    BusSession.fence == guard.lease.fence,
                )
            )
        stmt = (
            update(Task)
            .where(*conditions)
            .values(**(values or {}), last_sequence=Task.last_sequence + 1, updated_at=now)
            .returning(
                Task.last_sequence,
                Task.status,
                Task.progress,
                Task.entity_id,
                Task.type,
                Task.project_id,
                Task.cancel_requested,
            )
            .execution_options(synchronize_session=False)
        )
        row = (await self.session.execute(stmt)).one_or_none()
        if row is None:
            return None
        event = TaskEvent(
            id=new_id(),
            task_id=task_id,
            sequence=row.last_sequence,
            kind=kind.value,
            at=now,
            status=row.status,
            progress=row.progress,
            entity_id=row.entity_id,
            type=row.type,
            project_id=row.project_id,
            step=step,
            message=message,
            artifact_id=artifact.id if artifact is not None else None,
        )
        self.session.add(event)
        await self.session.flush()
        record = EventRecord.from_row(event, artifact)
        self.events.append(record)
        return Appended(record, bool(row.cancel_requested))


class Journal:
    def __init__(self, db: Database, hub: EventHub) -> None:
        self.db = db
        self.hub = hub

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[JournalTransaction]:
        async with self.db.write() as session:
            txn = JournalTransaction(session)
            yield txn
        await self.publish(txn.events)

    async def publish(self, events: list[EventRecord]) -> None:
        """Broadcast committed events. A broadcast failure loses nothing: the database has
        them and subscribers catch up through ``afterSequence``."""
        for event in events:
            try:
                await self.hub.publish(event)
            except Exception:
                log.warning(
                    "broadcast failed; subscribers will catch up from the database",
                    extra={"action": "broadcast_failed", "task_id": event.task_id},
                    exc_info=True,
                )
                return
