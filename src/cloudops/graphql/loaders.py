"""DataLoaders: nested fields of a list cost one query per field, not one per row."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import select
from strawberry.dataloader import DataLoader

from cloudops.db.engine import Database
from cloudops.db.models import Artifact, Environment, Project, Task
from cloudops.domain import TaskStatus

#: Rows looked up by id.
ById = TypeVar("ById", Project, Environment)
#: Rows listed per owner (project -> environments, task -> artifacts), oldest first.
Owned = TypeVar("Owned", Environment, Artifact)


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
            rows = (await session.execute(select(model).where(model.id.in_(ids)))).scalars()
            found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]

    async def _owned(
        self, model: type[Owned], owner: str, owner_ids: Sequence[str]
    ) -> list[list[Owned]]:
        column = getattr(model, owner)
        grouped: dict[str, list[Owned]] = defaultdict(list)
        async with self._db.read() as session:
            rows = await session.execute(
                select(model).where(column.in_(owner_ids)).order_by(model.created_at, model.id)
            )
            for row in rows.scalars():
                grouped[getattr(row, owner)].append(row)
        return [grouped[i] for i in owner_ids]

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
