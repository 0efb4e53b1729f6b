"""Stored events, and the subscription stream: replay from the database, then live.

Order of operations is what makes it gapless and duplicate-free: subscribe to the hub
first (so nothing published from now on is missed), then read what is stored, then pass
on live events, dropping the ones already sent and filling any gap from the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import select

from cloudops.db.engine import Database
from cloudops.db.models import Artifact, Task, TaskEvent
from cloudops.domain import TaskStatus
from cloudops.events.hub import EventHub
from cloudops.events.records import EventRecord


async def stored_events(
    db: Database,
    task_id: str,
    after_sequence: int,
    *,
    limit: int | None = None,
    up_to: int | None = None,
) -> list[EventRecord]:
    stmt = (
        select(TaskEvent, Artifact)
        .outerjoin(Artifact, Artifact.id == TaskEvent.artifact_id)
        .where(TaskEvent.task_id == task_id, TaskEvent.sequence > after_sequence)
        .order_by(TaskEvent.sequence)
    )
    if up_to is not None:
        stmt = stmt.where(TaskEvent.sequence <= up_to)
    if limit is not None:
        stmt = stmt.limit(limit)
    async with db.read() as session:
        rows = (await session.execute(stmt)).all()
    return [EventRecord.from_row(event, artifact) for event, artifact in rows]


async def task_stream(
    db: Database, hub: EventHub, task_id: str, after_sequence: int | None
) -> AsyncIterator[EventRecord]:
    """The events of one task: replayed (when after_sequence is given), then live, ending
    after the final event (at once when it is stored already)."""
    async with hub.subscribe(lambda e: e.task_id == task_id) as live:
        async with db.read() as session:
            state = (
                await session.execute(
                    select(Task.last_sequence, Task.status).where(Task.id == task_id)
                )
            ).one()
        last_stored, final_stored = state[0], TaskStatus(state[1]).is_final
        sent = last_stored if after_sequence is None else after_sequence
        if after_sequence is not None:
            for record in await stored_events(db, task_id, after_sequence):
                yield record
                sent = record.sequence
                if record.kind.is_final:
                    return
        if final_stored:
            return
        async for record in live:
            if record.sequence <= sent:
                continue  # already replayed
            if record.sequence > sent + 1:  # a broadcast was lost: fill the gap
                for missing in await stored_events(db, task_id, sent, up_to=record.sequence - 1):
                    yield missing
                    sent = missing.sequence
            yield record
            sent = record.sequence
            if record.kind.is_final:
                return
