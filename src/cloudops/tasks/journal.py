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
import functools
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, Update, bindparam, exists, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.bus.base import Lease
from cloudops.db.engine import Database
from cloudops.db.models import Artifact, BusSession, Task, TaskEvent
from cloudops.db.types import new_id, utcnow
from cloudops.domain import EventKind, TaskStatus, TaskType
from cloudops.events.hub import EventHub
from cloudops.events.records import ArtifactRecord, EventRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Guard:
    """What the writer expects the task to be; the write happens only if it still is."""

    statuses: Collection[TaskStatus]
    attempt: int | None = None
    #: On a shared database: write only while this lease is still ours.
    lease: Lease | None = None


class TaskState(Protocol):
    """What an event repeats of its task: a Task, or the row a guarded UPDATE returned."""

    @property
    def status(self) -> str: ...
    @property
    def progress(self) -> float: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def project_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Appended:
    event: EventRecord
    cancel_requested: bool


_TASKS = cast(Table, Task.__table__)
_EVENTS = cast(Table, TaskEvent.__table__)
_RETURNED = (
    _TASKS.c.last_sequence,
    _TASKS.c.status,
    _TASKS.c.progress,
    _TASKS.c.entity_id,
    _TASKS.c.type,
    _TASKS.c.project_id,
    _TASKS.c.cancel_requested,
)
_INSERT_EVENT = _EVENTS.insert()
#: (attribute, column) of every Task column: attributes and column keys differ for ``meta``.
_TASK_COLUMNS = [
    (attribute.key, attribute.columns[0]) for attribute in Task.__mapper__.column_attrs
]


def _event_row(record: EventRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "task_id": record.task_id,
        "sequence": record.sequence,
        "kind": record.kind.value,
        "at": record.at,
        "status": record.status.value,
        "progress": record.progress,
        "entity_id": record.entity_id,
        "type": record.type.value,
        "project_id": record.project_id,
        "step": record.step,
        "message": record.message,
        "artifact_id": record.artifact.id if record.artifact is not None else None,
    }


def _column_key(attribute: str) -> str:
    """Callers name Task attributes (``meta``); the table names columns (``metadata``)."""
    return str(Task.__mapper__.attrs[attribute].columns[0].key)


@functools.lru_cache(maxsize=512)
def _guarded_update(attributes: tuple[str, ...], attempt: bool, lease: bool) -> Update:
    """The guarded UPDATE … RETURNING for one shape of write, built once with bind
    parameters: building SQLAlchemy expressions per write cost more CPU than the write."""
    conditions = [
        _TASKS.c.id == bindparam("g_task"),
        _TASKS.c.status.in_(bindparam("g_statuses", expanding=True)),
    ]
    if attempt:
        conditions.append(_TASKS.c.attempt == bindparam("g_attempt"))
    if lease:
        sessions = cast(Table, BusSession.__table__)
        conditions.append(
            exists().where(
                sessions.c.entity_id == bindparam("g_entity"),
                sessions.c.owner == bindparam("g_owner"),
                sessions.c.fence == bindparam("g_fence"),
            )
        )
    values: dict[str, Any] = {_column_key(a): bindparam(f"v_{a}") for a in attributes}
    values["last_sequence"] = _TASKS.c.last_sequence + 1
    values["updated_at"] = bindparam("g_now")
    return update(_TASKS).where(*conditions).values(values).returning(*_RETURNED)


_INSERT_TASK = _TASKS.insert()


class JournalTransaction:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.events: list[EventRecord] = []

    async def insert(self, task: Task, kind: EventKind, message: str) -> EventRecord:
        """Insert a new task (its row as given, ``last_sequence`` 1) with its first event:
        no guard is needed for a row nobody else can see yet, so no UPDATE either."""
        task.last_sequence = 1
        await self.session.execute(
            _INSERT_TASK,
            {column.key: getattr(task, attribute) for attribute, column in _TASK_COLUMNS},
        )
        return await self._add_event(task.id, 1, kind, task.created_at, task, message=message)

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
        values = values or {}
        params: dict[str, Any] = {
            "g_task": task_id,
            "g_statuses": [s.value for s in guard.statuses],
            "g_now": now,
        }
        if guard.attempt is not None:
            params["g_attempt"] = guard.attempt
        if guard.lease is not None:
            params["g_entity"] = guard.lease.entity_id
            params["g_owner"] = guard.lease.owner
            params["g_fence"] = guard.lease.fence
        for attribute, value in values.items():
            params[f"v_{attribute}"] = value
        stmt = _guarded_update(tuple(values), guard.attempt is not None, guard.lease is not None)
        row = (await self.session.execute(stmt, params)).one_or_none()
        if row is None:
            return None
        record = await self._add_event(
            task_id,
            row.last_sequence,
            kind,
            now,
            row,
            step=step,
            message=message,
            artifact=ArtifactRecord.from_row(artifact) if artifact is not None else None,
        )
        return Appended(record, bool(row.cancel_requested))

    async def _add_event(
        self,
        task_id: str,
        sequence: int,
        kind: EventKind,
        at: datetime,
        task: TaskState,
        *,
        step: dict[str, Any] | None = None,
        message: str | None = None,
        artifact: ArtifactRecord | None = None,
    ) -> EventRecord:
        """Insert the event, with ``task``'s state right after it, and keep it for
        publishing after commit."""
        record = EventRecord(
            id=new_id(),
            task_id=task_id,
            sequence=sequence,
            kind=kind,
            at=at,
            status=TaskStatus(task.status),
            progress=task.progress,
            entity_id=task.entity_id,
            type=TaskType(task.type),
            project_id=task.project_id,
            step=step,
            message=message,
            artifact=artifact,
        )
        await self.session.execute(_INSERT_EVENT, _event_row(record))
        self.events.append(record)
        return record


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
