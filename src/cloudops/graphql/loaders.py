"""Batched reads of related rows: nested fields of a list cost one query per field, not one
per row. DataLoaders serve any nested field; a task page reads its relations up front."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from cloudops.db.engine import Database
from cloudops.db.models import Artifact, Environment, Project, Task
from cloudops.domain import TaskStatus

#: Rows looked up by id.
ById = TypeVar("ById", Project, Environment)
#: Rows listed per owner (project -> environments, task -> artifacts), oldest first.
Owned = TypeVar("Owned", Environment, Artifact)


async def rows_by_id(
    session: AsyncSession, model: type[ById], ids: Collection[str]
) -> dict[str, ById]:
    rows = (await session.execute(select(model).where(model.id.in_(ids)))).scalars()
    return {row.id: row for row in rows}


async def rows_by_owner(
    session: AsyncSession, model: type[Owned], owner: str, owner_ids: Collection[str]
) -> dict[str, list[Owned]]:
    column = getattr(model, owner)
    grouped: dict[str, list[Owned]] = defaultdict(list)
    rows = await session.execute(
        select(model).where(column.in_(owner_ids)).order_by(model.created_at, model.id)
    )
    for row in rows.scalars():
        grouped[getattr(row, owner)].append(row)
    return grouped


@dataclass(frozen=True, slots=True)
class TaskRelations:
    """The projects, environments and artifacts of one page of tasks, read in the page's own
    session. With them a node's nested fields resolve without an await: on a page of 50 the
    awaits (a coroutine, a DataLoader future and an event-loop turn each) cost more than
    the three queries. ``None`` for a relation the query did not ask for."""

    projects: Mapping[str, Project] | None = None
    environments: Mapping[str, Environment] | None = None
    artifacts: Mapping[str, list[Artifact]] | None = None

    @classmethod
    async def read(
        cls, session: AsyncSession, tasks: Sequence[Task], wanted: Collection[str]
    ) -> TaskRelations:
        projects = environments = artifacts = None
        if "project" in wanted:
            ids = {t.project_id for t in tasks if t.project_id is not None}
            projects = await rows_by_id(session, Project, ids) if ids else {}
        if "environment" in wanted:
            ids = {t.environment_id for t in tasks if t.environment_id is not None}
            environments = await rows_by_id(session, Environment, ids) if ids else {}
        if "artifacts" in wanted:
            ids = {t.id for t in tasks}
            artifacts = await rows_by_owner(session, Artifact, "task_id", ids) if ids else {}
        return cls(projects, environments, artifacts)


class Loaders:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.project = DataLoader[str, Project | None](
            load_fn=functools.partial(self._by_id, Project)
        )
        self.environment = DataLoader[str, Environment | None](
            load_fn=functools.partial(self._by_id, Environment)
        )
        self.environments_of_project = DataLoader[str, list[Environment]](
            load_fn=functools.partial(self._owned, Environment, "project_id")
        )
        self.artifacts_of_task = DataLoader[str, list[Artifact]](
            load_fn=functools.partial(self._owned, Artifact, "task_id")
        )
        self.queue_position = DataLoader[tuple[str, int], int](load_fn=self._queue_positions)

    async def _by_id(self, model: type[ById], ids: Sequence[str]) -> list[ById | None]:
        async with self._db.read() as session:
            found = await rows_by_id(session, model, ids)
        return [found.get(i) for i in ids]

    async def _owned(
        self, model: type[Owned], owner: str, owner_ids: Sequence[str]
    ) -> list[list[Owned]]:
        async with self._db.read() as session:
            grouped = await rows_by_owner(session, model, owner, owner_ids)
        return [grouped.get(i, []) for i in owner_ids]

    async def _queue_positions(self, keys: Sequence[tuple[str, int]]) -> list[int]:
        """How many QUEUED tasks of the same entity are ahead of each (entity, queue_seq)."""
        entities = {entity for entity, _ in keys}
        queued: dict[str, list[int]] = defaultdict(list)
        async with self._db.read() as session:
            rows = await session.execute(
                select(Task.entity_id, Task.queue_seq).where(
                    Task.entity_id.in_(entities), Task.status == TaskStatus.QUEUED.value
                )
            )
            for entity, seq in rows:
                queued[entity].append(seq)
        return [sum(1 for seq in queued[entity] if seq < mine) for entity, mine in keys]
