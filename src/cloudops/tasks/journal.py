"""The journal: the one place that changes a task and appends its event.

Each event is a guarded ``UPDATE tasks ... WHERE <guard> RETURNING`` that bumps
``last_sequence``, followed by the insert of the event with that sequence, in one
transaction. On PostgreSQL a write is one statement (a data-modifying CTE), also when it
appends several events of one task (an attempt's held events go with its next one): one
UPDATE moves ``last_sequence`` by their number and each is inserted with its own. The guard
(expected statuses, attempt) is how concurrent writers are fenced: zero rows updated means
somebody else moved the task and the caller must not write. On SQLite a write made alone
(a worker's, a submission with nothing to read) is one transaction sent to the database's
thread in one trip (``db/one_trip.py``); the same code runs inside a session's transaction.
Events are published through the hub only after the transaction has committed, so the
stored events and the broadcast ones are the same events (invariant 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy
from sqlalchemy import Insert, Select, Table, Update, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cloudops.bus.base import BoundInStatement, InStatement, Lease
from cloudops.db.engine import Database
from cloudops.db.models import Artifact, BusSession, Task, TaskEvent
from cloudops.db.one_trip import SessionStatements, Statements
from cloudops.db.types import new_id, utcnow
from cloudops.domain import EventKind, TaskStatus, TaskType
from cloudops.events.hub import EventHub
from cloudops.events.records import ArtifactRecord, EventRecord

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Guard:
    """What the writer expects the task to be; the write happens only if it still is."""

    statuses: Collection[TaskStatus]
    attempt: int | None = None
    #: On a shared database: write only while this lease is still ours.
    lease: Lease | None = None
    #: Write only if the task is still at this version (its ``last_sequence``): nothing
    #: has happened to it since the writer read it.
    sequence: int | None = None


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
class _State:
    """An earlier event's task state within a batch: its own status and progress, the
    rest from the updated row (entity, type and project do not change)."""

    status: str
    progress: float
    row: Any

    @property
    def entity_id(self) -> str:
        return str(self.row.entity_id)

    @property
    def type(self) -> str:
        return str(self.row.type)

    @property
    def project_id(self) -> str | None:
        return cast(str | None, self.row.project_id)


@dataclass(frozen=True, slots=True)
class Appended:
    event: EventRecord
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Change:
    """One event to append and the task values it sets (see JournalTransaction.append_all)."""

    kind: EventKind
    values: dict[str, Any]
    step: dict[str, Any] | None = None
    message: str | None = None
    at: datetime | None = None
    artifact: Artifact | None = None


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


#: The task row as it was before a batch's UPDATE (PostgreSQL: a self-join reads it from
#: the statement's snapshot; with the guard holding, only this writer changed it since).
_BEFORE = _TASKS.alias("before")


@functools.lru_cache(maxsize=512)
def _guarded_update(
    attributes: tuple[str, ...],
    attempt: bool,
    lease: bool,
    count: int = 1,
    sequence: bool = False,
    statuses: int = 1,
    before: bool = True,
) -> Update:
    """The guarded UPDATE … RETURNING for one shape of write, built once with bind
    parameters: building SQLAlchemy expressions per write cost more CPU than the write.
    ``count`` events at once: ``last_sequence`` moves by that many, and the row's status
    and progress before the update come back too (``before``; SQLite's RETURNING cannot
    read a joined table). ``statuses``: how many the guard allows, each its own
    parameter (an expanding IN would be re-rendered per execution)."""
    conditions = [
        _TASKS.c.id == bindparam("g_task"),
        _TASKS.c.status.in_([bindparam(f"g_status{i}") for i in range(statuses)]),
    ]
    if attempt:
        conditions.append(_TASKS.c.attempt == bindparam("g_attempt"))
    if sequence:
        conditions.append(_TASKS.c.last_sequence == bindparam("g_sequence"))
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
    values["last_sequence"] = _TASKS.c.last_sequence + count
    values["updated_at"] = bindparam("g_now")
    returned: tuple[Any, ...] = _RETURNED
    if count > 1 and before:
        conditions.append(_BEFORE.c.id == _TASKS.c.id)
        returned += (
            _BEFORE.c.status.label("before_status"),
            _BEFORE.c.progress.label("before_progress"),
        )
    return update(_TASKS).where(*conditions).values(values).returning(*returned)


#: Per event of a batch: whether the caller's values say its status, and its progress.
EventShape = tuple[bool, bool]


@functools.lru_cache(maxsize=512)
def _guarded_append(
    attributes: tuple[str, ...],
    attempt: bool,
    lease: bool,
    events: tuple[EventShape, ...],
    sequence: bool = False,
    bus: InStatement[Any] | None = None,
    statuses: int = 1,
) -> Select[Any]:
    """PostgreSQL: the guarded UPDATE and the inserts of its events in one statement (a
    data-modifying CTE): one round trip for any number of events of one task. Each event
    carries the task's status and progress right after it: the last one the updated row's,
    an earlier one what the values up to it set, else the row's before the update. No
    row: the guard failed and nothing was written (the bus's part, ``bus``, runs all the
    same: it must be harmless then, as a release fenced by the lost lease is)."""
    count = len(events)
    updated = _guarded_update(attributes, attempt, lease, count, sequence, statuses).cte("updated")
    statement = select(updated, *(bus.columns if bus is not None else ()))
    if bus is not None:
        statement = statement.add_cte(*bus.ctes)
    for index, (says_status, says_progress) in enumerate(events):
        last = index == count - 1

        def state(name: str, said: bool, index: int = index, last: bool = last) -> Any:
            if said:
                return bindparam(f"e{index}_{name}", type_=_EVENTS.c[name].type)
            return updated.c[name] if last else updated.c[f"before_{name}"]

        values = {
            "id": bindparam(f"e{index}_id", type_=_EVENTS.c.id.type),
            "task_id": bindparam("g_task", type_=_EVENTS.c.task_id.type),
            "sequence": updated.c.last_sequence - (count - 1 - index),
            "kind": bindparam(f"e{index}_kind", type_=_EVENTS.c.kind.type),
            "at": bindparam(f"e{index}_at", type_=_EVENTS.c.at.type),
            "status": state("status", says_status),
            "progress": state("progress", says_progress),
            **{name: updated.c[name] for name in ("entity_id", "type", "project_id")},
            "step": bindparam(f"e{index}_step", type_=_EVENTS.c.step.type),
            "message": bindparam(f"e{index}_message", type_=_EVENTS.c.message.type),
            "artifact_id": bindparam(f"e{index}_artifact", type_=_EVENTS.c.artifact_id.type),
        }
        insert_event = _EVENTS.insert().from_select(
            list(values), select(*(v.label(k) for k, v in values.items()))
        )
        statement = statement.add_cte(insert_event.cte(f"event{index}"))
    return statement


#: SQLite: the task numbered in its own INSERT (one writer at a time, so max()+1 is safe),
#: without a separate read of the last position.
_INSERT_NUMBERED_TASK = (
    _TASKS.insert()
    .values(queue_seq=select(func.coalesce(func.max(_TASKS.c.queue_seq), 0) + 1).scalar_subquery())
    .returning(_TASKS.c.queue_seq)
)


def _prefixed_insert(table: Table, prefix: str) -> Insert:
    return table.insert().values(
        {column.key: bindparam(f"{prefix}{column.key}", type_=column.type) for column in table.c}
    )


_QUEUE_POSITIONS = sqlalchemy.Sequence("task_queue_seq")
_TASK_ENTITY = bindparam("t_entity_id", type_=_TASKS.c.entity_id.type)


@functools.lru_cache(maxsize=8)
def _submission(bus: InStatement[str] | None) -> Select[Any]:
    """PostgreSQL: a new task and its first event in one statement (the event's foreign
    key is checked at the end of the statement, when the task row is there), with the
    bus's part when it has one. The task's queue position comes from a sequence, taken
    under a transaction lock on its entity (the materialized CTEs run first, in order),
    so two submissions to one entity commit in the order of their positions: strict
    FIFO. The statement returns the position."""
    locked = (
        select(func.pg_advisory_xact_lock(func.hashtext(_TASK_ENTITY)))
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    position = (
        select(_QUEUE_POSITIONS.next_value().label("queue_seq"))
        .select_from(locked)
        .cte("position")
        .prefix_with("MATERIALIZED")
    )
    values = {
        column.key: position.c.queue_seq
        if column.key == "queue_seq"
        else bindparam(f"t_{column.key}", type_=column.type)
        for column in _TASKS.c
    }
    insert_task = _TASKS.insert().from_select(
        list(values), select(*(value.label(key) for key, value in values.items()))
    )
    ctes = [insert_task.cte("task"), _prefixed_insert(_EVENTS, "e_").cte("event")]
    columns: list[Any] = [position.c.queue_seq]
    if bus is not None:
        ctes.extend(bus.ctes)
        columns.extend(bus.columns)
    return select(*columns).add_cte(*ctes)


class JournalTransaction:
    """The journal's writes in one transaction. A ``one_append`` write gets no ORM
    session: on PostgreSQL it is one statement on an autocommit connection, on SQLite one
    transaction in one trip to the database's thread (``Database.write_in_one_trip``);
    either has committed when its append returns."""

    def __init__(
        self, executor: AsyncSession | AsyncConnection | Database, *, one_append: bool = False
    ) -> None:
        self._executor = executor
        if isinstance(executor, Database):
            self._postgres = executor.dialect == "postgresql"
        else:
            bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
            self._postgres = bind.dialect.name == "postgresql"
        self.events: list[EventRecord] = []
        self._one_append = one_append

    @property
    def session(self) -> AsyncSession:
        """The transaction's ORM session, for the caller's own writes beside the journal's."""
        if not isinstance(self._executor, AsyncSession):
            raise RuntimeError("a one_append write has no ORM session: it is Core statements alone")
        return self._executor

    @property
    def _statements(self) -> AsyncSession | AsyncConnection:
        """Where the journal's PostgreSQL statements go, one await each."""
        if isinstance(self._executor, Database):
            raise RuntimeError("SQLite's one-trip writes take no statements one by one")
        return self._executor

    async def _on_sqlite(self, work: Callable[[Statements], T]) -> T:
        """SQLite: ``work`` in the session's transaction, or (one_append) as a
        transaction of its own in one trip."""
        if isinstance(self._executor, AsyncSession):
            return await self._executor.run_sync(lambda session: work(SessionStatements(session)))
        if isinstance(self._executor, Database):
            return await self._executor.write_in_one_trip(work)
        raise RuntimeError("SQLite writes go through a session or write_in_one_trip")

    async def insert(
        self, task: Task, kind: EventKind, message: str, bus: InStatement[str] | None = None
    ) -> EventRecord:
        """Insert a new task (its row as given, ``last_sequence`` 1) with its first event:
        no guard is needed for a row nobody else can see yet, so no UPDATE either. The
        insert numbers the task's queue position (set on ``task``); on PostgreSQL it is one
        statement with the event, which also runs the bus's part."""
        task.last_sequence = 1
        row = {column.key: getattr(task, attribute) for attribute, column in _TASK_COLUMNS}
        record = _record(new_id(), task.id, 1, kind, task.created_at, task, None, message, None)
        if not self._postgres:
            del row["queue_seq"]
            task.queue_seq = await self._on_sqlite(
                lambda statements: _insert_sqlite(statements, row, record)
            )
            self.events.append(record)
            return record
        params = {f"t_{key}": value for key, value in row.items() if key != "queue_seq"}
        params.update((f"e_{key}", value) for key, value in _event_row(record).items())
        if bus is not None:
            params.update(bus.params(task.entity_id))
        task.queue_seq = (await self._statements.execute(_submission(bus), params)).scalar_one()
        self.events.append(record)
        return record

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
        change = Change(kind, values or {}, step, message, at, artifact)
        appended = await self.append_all(task_id, guard, [change])
        return appended[-1] if appended is not None else None

    async def append_all(
        self,
        task_id: str,
        guard: Guard,
        changes: Sequence[Change],
        *,
        bus: BoundInStatement | None = None,
    ) -> list[Appended] | None:
        """Apply the changes to one task and append their events in order, as one write:
        ``guard`` is checked before the first, the others follow from it. On PostgreSQL
        one statement, however many events, which also runs ``bus`` (the bus's part, e.g.
        releasing the session; PostgreSQL only). None when the guard no longer holds. (On
        SQLite a batch whose events need the row as it was is one guarded UPDATE per
        event, but under the one writer each later guard follows from the earlier
        event's write, so only the first can fail and a None writes nothing.)"""
        if self._one_append and self.events:
            raise RuntimeError("a one_append transaction appends one event only")
        if not changes:
            raise ValueError("append_all needs at least one change")
        params: dict[str, Any] = {
            "g_task": task_id,
            **_status_params(guard.statuses),
            "g_now": changes[-1].at or utcnow(),
        }
        if guard.attempt is not None:
            params["g_attempt"] = guard.attempt
        if guard.lease is not None:
            params["g_entity"] = guard.lease.entity_id
            params["g_owner"] = guard.lease.owner
            params["g_fence"] = guard.lease.fence
        if guard.sequence is not None:
            params["g_sequence"] = guard.sequence
        if not self._postgres:
            if bus is not None:
                raise ValueError("a bus's part rides only in a PostgreSQL statement")
            outcome = await self._on_sqlite(
                lambda statements: _append_sqlite(statements, task_id, guard, changes, params)
            )
            if outcome is None:
                return None
            records, appended = outcome
            self.events.extend(records)
            return appended
        merged, stated = _merge(changes)
        shapes: list[EventShape] = []
        for index, change in enumerate(changes):
            at = params["g_now"] if index == len(changes) - 1 else (change.at or utcnow())
            said = stated[index]
            batch = len(changes) > 1
            shapes.append((batch and said[0] is not None, batch and said[1] is not None))
            params.update(
                {
                    f"e{index}_id": new_id(),
                    f"e{index}_kind": change.kind.value,
                    f"e{index}_at": at,
                    f"e{index}_step": change.step,
                    f"e{index}_message": change.message,
                    f"e{index}_artifact": change.artifact.id if change.artifact else None,
                    f"e{index}_status": said[0],
                    f"e{index}_progress": said[1],
                }
            )
        params.update((f"v_{attribute}", value) for attribute, value in merged.items())
        if bus is not None:
            params.update(bus.params)
        statement = _guarded_append(
            tuple(merged),
            guard.attempt is not None,
            guard.lease is not None,
            tuple(shapes),
            guard.sequence is not None,
            bus.part if bus is not None else None,
            len(guard.statuses),
        )
        row = (await self._statements.execute(statement, params)).one_or_none()
        if row is None:
            return None
        indexes = range(len(changes))
        records = _batch_records(
            task_id,
            changes,
            row,
            stated,
            (row.before_status, row.before_progress) if len(changes) > 1 else (None, None),
            [params[f"e{index}_id"] for index in indexes],
            [params[f"e{index}_at"] for index in indexes],
        )
        self.events.extend(records)
        return [Appended(record, bool(row.cancel_requested)) for record in records]


def _insert_sqlite(statements: Statements, row: dict[str, Any], record: EventRecord) -> int:
    """SQLite: the task's row, numbered by its own INSERT, and its first event; the
    task's queue position."""
    (inserted,) = statements.rows(_INSERT_NUMBERED_TASK, row)
    statements.insert_many(_INSERT_EVENT, [_event_row(record)])
    return int(inserted.queue_seq)


_SQLiteOutcome = tuple[list[EventRecord], list[Appended]] | None


def _append_sqlite(
    statements: Statements,
    task_id: str,
    guard: Guard,
    changes: Sequence[Change],
    params: dict[str, Any],
) -> _SQLiteOutcome:
    """SQLite, inside the write's transaction: one guarded UPDATE for the batch where each
    event's state follows without the row as it was before (``_known_before``), else one
    per event (each event carries the task's state right after it); then one INSERT of
    all the events. Synchronous: it runs on SQLite's thread (a one-trip write) or in an
    ORM session's greenlet."""
    merged, stated = _merge(changes)
    follows, before_status = _known_before(guard, merged, stated)
    if follows:
        return _append_at_once(
            statements, task_id, guard, changes, params, (merged, stated), before_status
        )
    results = []
    records = []
    statuses = len(guard.statuses)
    for change in changes:
        now = change.at or utcnow()
        values = {f"v_{attribute}": value for attribute, value in change.values.items()}
        statement = _guarded_update(
            tuple(change.values),
            guard.attempt is not None,
            guard.lease is not None,
            1,
            guard.sequence is not None,
            statuses,
        )
        rows = statements.rows(statement, {**params, **values, "g_now": now})
        if not rows:
            return None
        row = rows[0]
        stored = ArtifactRecord.from_row(change.artifact) if change.artifact else None
        record = _record(
            new_id(),
            task_id,
            row.last_sequence,
            change.kind,
            now,
            row,
            change.step,
            change.message,
            stored,
        )
        records.append(record)
        results.append(Appended(record, bool(row.cancel_requested)))
        # The next event's guard follows from this one (STARTED makes the task RUNNING).
        if "status" in change.values:
            params["g_status0"] = change.values["status"]
            statuses = 1
        if "attempt" in change.values and guard.attempt is not None:
            params["g_attempt"] = change.values["attempt"]
        if guard.sequence is not None:
            params["g_sequence"] = row.last_sequence
    # One statement for the batch (executemany).
    statements.insert_many(_INSERT_EVENT, [_event_row(record) for record in records])
    return records, results


def _append_at_once(
    statements: Statements,
    task_id: str,
    guard: Guard,
    changes: Sequence[Change],
    params: dict[str, Any],
    merge: tuple[dict[str, Any], list[tuple[Any, Any]]],
    before_status: str | None,
) -> _SQLiteOutcome:
    """SQLite: the batch as one guarded UPDATE (``last_sequence`` moves by its length)
    and one INSERT of its events; ``before_status``: the task's before the batch, for
    an earlier event that does not say its own (``_known_before``)."""
    merged, stated = merge
    statement = _guarded_update(
        tuple(merged),
        guard.attempt is not None,
        guard.lease is not None,
        len(changes),
        guard.sequence is not None,
        len(guard.statuses),
        before=False,
    )
    values = {f"v_{attribute}": value for attribute, value in merged.items()}
    rows = statements.rows(statement, {**params, **values})
    if not rows:
        return None
    row = rows[0]
    records = _batch_records(
        task_id,
        changes,
        row,
        stated,
        (before_status, row.progress),  # a batch that reaches here sets no progress
        [new_id() for _ in changes],
        [change.at or utcnow() for change in changes[:-1]] + [params["g_now"]],
    )
    statements.insert_many(_INSERT_EVENT, [_event_row(record) for record in records])
    return records, [Appended(record, bool(row.cancel_requested)) for record in records]


def _batch_records(
    task_id: str,
    changes: Sequence[Change],
    row: Any,
    stated: list[tuple[Any, Any]],
    before: tuple[Any, Any],
    ids: Sequence[str],
    ats: Sequence[datetime],
) -> list[EventRecord]:
    """A batch's events, numbered up to the updated row's ``last_sequence``, each with the
    task's state right after it: the last one the row's, an earlier one what the values up
    to it say (``stated``), else ``before`` (the status and progress before the batch)."""
    first = row.last_sequence - len(changes) + 1
    records = []
    for index, change in enumerate(changes):
        state: TaskState = row
        if index < len(changes) - 1:
            status, progress = stated[index]
            state = _State(
                status if status is not None else before[0],
                progress if progress is not None else before[1],
                row,
            )
        records.append(
            _record(
                ids[index],
                task_id,
                first + index,
                change.kind,
                ats[index],
                state,
                change.step,
                change.message,
                ArtifactRecord.from_row(change.artifact) if change.artifact else None,
            )
        )
    return records


def _merge(changes: Sequence[Change]) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
    """A batch's values as one update (a later change wins), and per event the status
    and progress that the values up to it say (None: not said, the row's before)."""
    merged: dict[str, Any] = {}
    stated = []
    for change in changes:
        merged.update(change.values)
        stated.append((merged.get("status"), merged.get("progress")))
    return merged, stated


def _known_before(
    guard: Guard, merged: dict[str, Any], stated: list[tuple[Any, Any]]
) -> tuple[bool, str | None]:
    """Whether what the earlier events of a batch need of the row before it follows
    without reading it, and the status before it if they need that: the status, if the
    guard allows exactly one; the progress, if the batch sets none (then the row's after
    is the row's before)."""
    earlier = stated[:-1]
    if any(said is None for _, said in earlier) and "progress" in merged:
        return False, None
    if not any(said is None for said, _ in earlier):
        return True, None
    if len(guard.statuses) != 1:
        return False, None
    return True, next(iter(guard.statuses)).value


def _status_params(statuses: Collection[TaskStatus]) -> dict[str, str]:
    """The guard's statuses as ``_guarded_update``'s parameters (in a stable order)."""
    return {f"g_status{i}": status.value for i, status in enumerate(sorted(statuses))}


def _record(
    event_id: str,
    task_id: str,
    sequence: int,
    kind: EventKind,
    at: datetime,
    task: TaskState,
    step: dict[str, Any] | None,
    message: str | None,
    artifact: ArtifactRecord | None,
) -> EventRecord:
    """The event, carrying ``task``'s state right after it."""
    return EventRecord(
        id=event_id,
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


class Journal:
    def __init__(self, db: Database, hub: EventHub) -> None:
        self.db = db
        self.hub = hub
        self._warned_at = float("-inf")

    @contextlib.asynccontextmanager
    async def transaction(self, *, one_append: bool = False) -> AsyncIterator[JournalTransaction]:
        """``one_append``: the caller appends exactly one event and does nothing else; on
        PostgreSQL that append is a single statement, sent without BEGIN and COMMIT (it
        has committed when ``append`` returns); on SQLite it is a transaction on a
        connection, with no ORM session (``txn.session`` refuses in both cases)."""
        if one_append:
            postgres = self.db.dialect == "postgresql"
            if postgres:
                async with self.db.autocommit() as conn:
                    txn = JournalTransaction(conn, one_append=True)
                    yield txn
            else:
                txn = JournalTransaction(self.db, one_append=True)
                yield txn
        else:
            async with self.db.write() as session:
                txn = JournalTransaction(session, one_append=one_append)
                yield txn
        self.publish(txn.events)

    def publish(self, events: list[EventRecord]) -> None:
        """Broadcast committed events, in order, without waiting for the backend: the
        write is done, and its caller (a mutation, the attempt's next step) need not
        wait for a round trip to Redis. A broadcast failure loses nothing: the database
        has the events, and subscribers fill a gap from it or resume with
        ``afterSequence``. A write's events go out together, as one message where they
        fit."""
        if not events:
            return
        task_id = events[0].task_id  # for the warning: a write is mostly one task's
        try:
            posted = self.hub.post_all(events)
        except Exception as exc:
            self._broadcast_failed(task_id, exc)
            return
        for sent in posted:
            sent.add_done_callback(functools.partial(self._after_post, task_id))

    def _after_post(self, task_id: str, sent: asyncio.Future[None]) -> None:
        if sent.cancelled():
            return
        error = sent.exception()
        if error is not None:
            self._broadcast_failed(task_id, error)

    def _broadcast_failed(self, task_id: str, error: BaseException) -> None:
        """One warning a second at most: with the backend gone, every event fails."""
        now = time.monotonic()
        if now - self._warned_at < 1.0:
            return
        self._warned_at = now
        log.warning(
            "broadcast failed; subscribers will catch up from the database: %s",
            error or type(error).__name__,
            extra={"action": "broadcast_failed", "task_id": task_id},
        )
